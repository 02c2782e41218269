// Package fashionmnist writes images of Debian's dataset-fashion-mnist (Zalando's Fashion-MNIST,
// 28x28 grayscale, IDX files under /usr/share/datasets/fashion-mnist) as an image folder
// root/<class>/<image>.png, the layout `pipeline run --data` reads. Tests and the small-data
// experiments of the README use it as a real grayscale, low-resolution dataset.
package fashionmnist

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"os"
	"path/filepath"
)

// Dir is where Debian's dataset-fashion-mnist installs its files.
const Dir = "/usr/share/datasets/fashion-mnist"

// Classes are the names of the 10 labels, used as folder names (sorted order = label order).
var Classes = [10]string{"0-tshirt", "1-trouser", "2-pullover", "3-dress", "4-coat", "5-sandal", "6-shirt", "7-sneaker", "8-bag", "9-boot"}

// Available reports whether the dataset's training files are installed in dir.
func Available(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "train-images-idx3-ubyte.gz"))
	return err == nil
}

// WriteFolder writes the first per images of each of the given labels (0-9) of the training part
// of the dataset in dir as dst/<class>/<index>.png (8-bit grayscale), and returns the number of
// images written.
func WriteFolder(dir, dst string, labels []int, per int) (int, error) {
	imgs, rows, cols, err := readIDX(filepath.Join(dir, "train-images-idx3-ubyte.gz"), 3)
	if err != nil {
		return 0, err
	}
	lbls, _, _, err := readIDX(filepath.Join(dir, "train-labels-idx1-ubyte.gz"), 1)
	if err != nil {
		return 0, err
	}
	size := rows * cols
	if len(imgs) != len(lbls)*size {
		return 0, fmt.Errorf("fashionmnist: %d images of %dx%d but %d labels", len(imgs)/max(size, 1), rows, cols, len(lbls))
	}
	want := map[int]int{}
	for _, l := range labels {
		if l < 0 || l >= len(Classes) {
			return 0, fmt.Errorf("fashionmnist: label %d outside 0-9", l)
		}
		want[l] = per
		if err := os.MkdirAll(filepath.Join(dst, Classes[l]), 0o755); err != nil {
			return 0, fmt.Errorf("fashionmnist: %w", err)
		}
	}
	written := 0
	for i, l := range lbls {
		if want[int(l)] == 0 {
			continue
		}
		want[int(l)]--
		g := &image.Gray{Pix: imgs[i*size : (i+1)*size], Stride: cols, Rect: image.Rect(0, 0, cols, rows)}
		if err := writePNG(filepath.Join(dst, Classes[l], fmt.Sprintf("%05d.png", i)), g); err != nil {
			return written, err
		}
		written++
	}
	return written, nil
}

func writePNG(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("fashionmnist: %w", err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("fashionmnist: %s: %w", path, err)
	}
	return f.Close()
}

// readIDX reads a gzipped IDX file of unsigned bytes with dims dimensions: the data, and the
// last two dimensions for images (0 for labels).
func readIDX(path string, dims int) (data []byte, rows, cols int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("fashionmnist: %w (install Debian's dataset-fashion-mnist)", err)
	}
	defer f.Close()
	z, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return nil, 0, 0, fmt.Errorf("fashionmnist: %s: %w", path, err)
	}
	hdr := make([]uint32, 1+dims)
	if err := binary.Read(z, binary.BigEndian, hdr); err != nil {
		return nil, 0, 0, fmt.Errorf("fashionmnist: %s: header: %w", path, err)
	}
	if hdr[0] != 0x800|uint32(dims) {
		return nil, 0, 0, fmt.Errorf("fashionmnist: %s: magic %#x, want unsigned bytes in %d dimensions", path, hdr[0], dims)
	}
	n := 1
	for _, d := range hdr[1:] {
		n *= int(d)
	}
	if n > 100<<20 {
		return nil, 0, 0, fmt.Errorf("fashionmnist: %s: %d values is more than the dataset holds", path, n)
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(z, data); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("truncated: %w", err)
		}
		return nil, 0, 0, fmt.Errorf("fashionmnist: %s: %w", path, err)
	}
	if dims == 3 {
		rows, cols = int(hdr[2]), int(hdr[3])
	}
	return data, rows, cols, nil
}
