package backbone

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/grouploss/pipeline/backbone/ort"
)

const tinyModel = "testdata/tiny_cnn.onnx"

// ortLib initializes onnxruntime from ONNXRUNTIME_SHARED_LIBRARY_PATH or skips the test.
func ortLib(t testing.TB) string {
	t.Helper()
	p := os.Getenv(ort.EnvVar)
	if p == "" {
		t.Skip("onnxruntime library not configured (" + ort.EnvVar + " is unset): run `make test`")
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("onnxruntime library %q is missing: run `make test`", p)
	}
	if err := ort.Init(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// sharedDir returns ../shared (or $PIPELINE_SHARED_DIR) or skips the test.
func sharedDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("PIPELINE_SHARED_DIR")
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dir = filepath.Join(d, "..", "shared")
				break
			}
			if filepath.Dir(d) == d {
				t.Skip("shared data not found: no go.mod above the test directory; set PIPELINE_SHARED_DIR or run `make test`")
			}
		}
	}
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("shared data not found at %q: set PIPELINE_SHARED_DIR or run `make test`", dir)
	}
	return dir
}

func int8Model(t testing.TB) string {
	t.Helper()
	p := filepath.Join(sharedDir(t), "models", "mobilenetv2-12-int8.onnx")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared model %q not found: run `make test` with ../shared present", p)
	}
	return p
}

// randomImages returns n*c*h*w values roughly like ImageNet-normalized pixels.
func randomImages(seed uint64, n, c, h, w int) []float32 {
	r := rand.New(rand.NewPCG(seed, 42))
	x := make([]float32, n*c*h*w)
	for i := range x {
		x[i] = float32(r.Float64()*4 - 2)
	}
	return x
}
