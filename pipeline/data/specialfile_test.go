//go:build unix

package data

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// within fails the test if f does not return within d (a FIFO opened for reading blocks forever).
func within(t *testing.T, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still blocked after %v", d)
	}
}

// TestReadFileSpecialFiles: files that are not regular are refused without blocking or reading
// them; regular files of unknown size (/proc) are read whole; oversized files are refused from
// their size. Before, a pipe or /dev/zero panicked ("slice bounds out of range") and a FIFO blocked.
func TestReadFileSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "x.jpg")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	zero := filepath.Join(dir, "zero.jpg")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	sparse := filepath.Join(dir, "sparse.jpg")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(40 << 30); err != nil { // 40 GB, no block allocated
		t.Skip("sparse file:", err)
	}
	f.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	go func() { pw.Write(bytes.Repeat([]byte{0xff}, 5000)); pw.Close() }()
	stdin := "/proc/self/fd/" + strconv.Itoa(int(pr.Fd()))

	for _, c := range []struct {
		name, path string
		want       error
	}{
		{"fifo", fifo, ErrNotRegular},
		{"symlink to /dev/zero", zero, ErrNotRegular},
		{"pipe as /dev/stdin", stdin, ErrNotRegular},
		{"folder", dir, ErrNotRegular},
		{"sparse 40 GB", sparse, ErrFileTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			within(t, 10*time.Second, func() {
				_, err := readFile(c.path, make([]byte, 0, 16))
				if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.path) {
					t.Errorf("readFile: %v, want %v naming the file", err, c.want)
				}
				var p Preprocess = DefaultPreprocess()
				err = p.TensorFile(c.path, make([]float32, p.Size()))
				var ie *ImageError
				if !errors.As(err, &ie) || !errors.Is(err, c.want) {
					t.Errorf("TensorFile: %v, want an *ImageError wrapping %v", err, c.want)
				}
				if _, err := DecodeFile(c.path, 0); !errors.Is(err, c.want) {
					t.Errorf("DecodeFile: %v, want %v", err, c.want)
				}
			})
		})
	}
	// A regular file whose size stat reports as 0: read to its end (the buffer grows past its
	// capacity several times; this panicked).
	want, err := os.ReadFile("/proc/self/smaps")
	if err != nil || len(want) < 4096 {
		t.Skip("/proc/self/smaps:", err)
	}
	got, err := readFile("/proc/self/smaps", make([]byte, 0, 1))
	if err != nil || len(got) < len(want)/2 {
		t.Fatalf("readFile(/proc/self/smaps): %d bytes, %v; os.ReadFile read %d", len(got), err, len(want))
	}
}

// TestListFilesSpecial: a FIFO given as a manifest or found as a CUB list is refused at once
// (it blocked forever, ignoring SIGINT and SIGTERM); a folder entry that is a FIFO named .jpg is
// an undecodable image (refused, not read).
func TestListFilesSpecial(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "x.csv")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	within(t, 10*time.Second, func() {
		if _, err := Load(fifo); !errors.Is(err, ErrNotRegular) {
			t.Errorf("Load(fifo manifest): %v, want ErrNotRegular", err)
		}
	})
	cub := filepath.Join(dir, "cub")
	os.MkdirAll(cub, 0o755)
	os.WriteFile(filepath.Join(cub, "image_class_labels.txt"), []byte("1 1\n"), 0o644)
	if err := syscall.Mkfifo(filepath.Join(cub, "classes.txt"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(cub, "images.txt"), []byte("1 a.jpg\n"), 0o644)
	within(t, 10*time.Second, func() {
		if _, err := LoadCUB(cub); err == nil {
			// classes.txt is optional and a FIFO is not a regular file: it counts as absent.
		} else if !errors.Is(err, ErrNotRegular) {
			t.Errorf("LoadCUB with a FIFO list: %v", err)
		}
	})
}

// TestManifestLongLine: a 64 MiB line is refused at MaxLineBytes, naming the line, without the
// CSV reader buffering it (a 1 GB line peaked at 6 GB before its error).
func TestManifestLongLine(t *testing.T) {
	in := io.MultiReader(strings.NewReader("path,label\na.jpg,0\n"), io.LimitReader(zeros{}, 64<<20), strings.NewReader("\nb.jpg,1\n"))
	_, err := ParseManifest(in, "m.csv")
	var me *ManifestError
	if !errors.As(err, &me) || me.Line != 3 || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("got %v, want a *ManifestError at line 3 saying the line is too long", err)
	}
}

// TestOtherFormatsRefused: GIF content named .jpg is refused although a decoder for it is linked
// in (the README says JPEG and PNG).
func TestOtherFormatsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.jpg")
	var b bytes.Buffer
	img := image.NewPaletted(image.Rect(0, 0, 8, 8), []color.Color{color.White, color.Black})
	if err := gif.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, b.Bytes(), 0o644)
	if _, err := DecodeFile(path, 0); err == nil || !strings.Contains(err.Error(), "gif content") {
		t.Fatalf("DecodeFile(gif named .jpg): %v, want a refusal naming the format", err)
	}
	p := DefaultPreprocess()
	if err := p.TensorFile(path, make([]float32, p.Size())); err == nil {
		t.Fatal("TensorFile decoded gif content")
	}
}

// zeros is an endless reader of 'x' bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}
