package pipeline

import (
	"context"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/pipeline/config"
)

// TestFeatureCacheKeyCoversContent: a run on another folder with the same class and file names but
// other images extracts again (it reused the first folder's features: "features from cache", the
// same baseline, exit 0), as does a run after an image was edited in place; the unchanged folder
// still hits the cache.
func TestFeatureCacheKeyCoversContent(t *testing.T) {
	needORT(t)
	cfgA := tinyConfig(t)
	run := func(cfg config.Config) *Summary {
		t.Helper()
		cfg.Out = filepath.Join(t.TempDir(), "run")
		sum, err := Run(context.Background(), cfg, RunEnv{})
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	a := run(cfgA)
	if a.Timing.FeatureCacheHit {
		t.Fatal("first run hit the cache")
	}
	// B: a copy of A's folder with every image's colours inverted.
	srcDir := filepath.Dir(cfgA.Data)
	dstDir := t.TempDir()
	err := filepath.WalkDir(srcDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(srcDir, p)
		dst := filepath.Join(dstDir, rel)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		b, _ := os.ReadFile(p)
		if strings.HasSuffix(p, ".png") {
			b = invertPNG(t, p)
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgB := cfgA
	cfgB.Data = filepath.Join(dstDir, filepath.Base(cfgA.Data))
	b := run(cfgB)
	if b.Timing.FeatureCacheHit {
		t.Fatal("a folder with the same names but other images was served the first folder's cached features")
	}
	if again := run(cfgA); !again.Timing.FeatureCacheHit {
		t.Fatal("the unchanged folder missed the cache")
	}
	// An image edited in place (same name) is extracted again.
	img := filepath.Join(srcDir, "c0", "0.png")
	os.WriteFile(img, invertPNG(t, img), 0o644)
	if edited := run(cfgA); edited.Timing.FeatureCacheHit {
		t.Fatal("an edited image was served its old cached features")
	}
}

func invertPNG(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	dst := image.NewRGBA(src.Bounds())
	for y := src.Bounds().Min.Y; y < src.Bounds().Max.Y; y++ {
		for x := src.Bounds().Min.X; x < src.Bounds().Max.X; x++ {
			r, g, b, _ := src.At(x, y).RGBA()
			dst.Set(x, y, color.RGBA{255 - uint8(r>>8), 255 - uint8(g>>8), 255 - uint8(b>>8), 255})
		}
	}
	var out strings.Builder
	if err := png.Encode(&out, dst); err != nil {
		t.Fatal(err)
	}
	return []byte(out.String())
}
