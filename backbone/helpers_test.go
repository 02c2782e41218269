package backbone

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/testenv"
)

const tinyModel = "testdata/tiny_cnn.onnx"

// ortLib initializes onnxruntime from ONNXRUNTIME_SHARED_LIBRARY_PATH or skips the test.
func ortLib(t testing.TB) string {
	t.Helper()
	p := testenv.ORTLibrary(t)
	if err := ort.Init(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// sharedDir returns ../shared (or $PIPELINE_SHARED_DIR) or skips the test.
func sharedDir(t testing.TB) string { return testenv.SharedDir(t) }

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
