package data

import (
	"bytes"
	"errors"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// TestTensorBytesMatchesTensorFile: the bytes of a file give exactly TensorFile's tensor (JPEG
// through libjpeg-turbo, PNG through the Go decoder), from many goroutines sharing the pooled
// buffers; an image over MaxPixels is ErrTooLarge naming the given name.
func TestTensorBytesMatchesTensorFile(t *testing.T) {
	p := DefaultPreprocess()
	p.Resize, p.ResizeShorter = ResizeCenterCrop, 256
	dir := t.TempDir()
	var pngBuf bytes.Buffer
	png.Encode(&pngBuf, image.NewRGBA(image.Rect(0, 0, 300, 200)))
	pngPath := filepath.Join(dir, "a.png")
	os.WriteFile(pngPath, pngBuf.Bytes(), 0o644)
	files := []string{"testdata/pattern_420.jpg", "testdata/pattern_422.jpg", "testdata/progressive.jpg", "testdata/cmyk.jpg", pngPath}
	var wg sync.WaitGroup
	for _, f := range files {
		want := make([]float32, p.Size())
		if err := p.TensorFile(f, want); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got := make([]float32, p.Size())
				if err := p.TensorBytes("upload", b, got); err != nil || !slices.Equal(got, want) {
					t.Errorf("%s: TensorBytes differs from TensorFile (%v)", f, err)
				}
			}()
		}
	}
	wg.Wait()
	p.MaxPixels = 1000
	err := p.TensorBytes("upload", pngBuf.Bytes(), make([]float32, p.Size()))
	var ie *ImageError
	if !errors.Is(err, ErrTooLarge) || !errors.As(err, &ie) || ie.Path != "upload" {
		t.Errorf("over the pixel cap: %v, want ErrTooLarge naming \"upload\"", err)
	}
}
