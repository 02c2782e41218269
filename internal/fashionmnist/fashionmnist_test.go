package fashionmnist

import (
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFolder(t *testing.T) {
	if !Available(Dir) {
		t.Skipf("Fashion-MNIST not found in %s: run `make fashion-mnist` (Debian's dataset-fashion-mnist)", Dir)
	}
	dst := t.TempDir()
	n, err := WriteFolder(Dir, dst, []int{0, 9}, 3)
	if err != nil || n != 6 {
		t.Fatalf("wrote %d images, err %v; want 6", n, err)
	}
	for _, class := range []string{Classes[0], Classes[9]} {
		files, _ := filepath.Glob(filepath.Join(dst, class, "*.png"))
		if len(files) != 3 {
			t.Fatalf("%s: %d images, want 3", class, len(files))
		}
		f, err := os.Open(files[0])
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		g, ok := img.(*image.Gray)
		if !ok || g.Bounds().Dx() != 28 || g.Bounds().Dy() != 28 {
			t.Fatalf("%s: %T %v, want a 28x28 gray image", files[0], img, img.Bounds())
		}
		var sum int
		for _, p := range g.Pix {
			sum += int(p)
		}
		if sum == 0 {
			t.Errorf("%s is black", files[0])
		}
	}
	if _, err := WriteFolder(Dir, dst, []int{10}, 1); err == nil || !strings.Contains(err.Error(), "label 10 outside 0-9") {
		t.Errorf("label 10: %v", err)
	}
	if _, err := WriteFolder(t.TempDir(), dst, []int{0}, 1); err == nil || !strings.Contains(err.Error(), "dataset-fashion-mnist") {
		t.Errorf("missing files: %v", err)
	}
}
