package data

import (
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/grouploss/pipeline/internal/testenv"
)

// sharedDir returns the project's read-only shared folder (env PIPELINE_SHARED_DIR, else ../shared
// beside the repository root) or skips the test when it is absent.
func sharedDir(t testing.TB) string { return testenv.SharedDir(t) }

// cub100 returns the CUB-100 folder or skips the test.
func cub100(t testing.TB) string { return testenv.CUB100(t) }

func writeImage(t testing.TB, path string, img image.Image) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	switch filepath.Ext(path) {
	case ".png", ".PNG":
		err = png.Encode(f, img)
	default:
		err = jpeg.Encode(f, img, &jpeg.Options{Quality: 95})
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

func uniform(w, h int, c color.Color) *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			m.Set(x, y, c)
		}
	}
	return m
}

// syntheticPattern is the test image of testdata/make_pil_golden.py's pattern().
func syntheticPattern(w, h int) *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			r := (x*37 + y*11) % 256
			g := (x*x + 3*y*y + x*y) % 256
			b := int64(128+100*math.Sin(float64(x)/5)*math.Cos(float64(y)/7)) % 256
			m.SetNRGBA(x, y, color.NRGBA{uint8(r), uint8(g), uint8(b), 255})
		}
	}
	return m
}
