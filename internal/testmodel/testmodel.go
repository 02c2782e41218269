// Package testmodel writes the embedding models tests serve and embed with, the way `pipeline
// run` exports them (export.Write: cut backbone, head, L2 normalization, preprocess.* metadata),
// without training: the 6x6 test CNN of backbone/testdata with a fixed 4->3 head (Tiny), or the
// shared MobileNetV2 with a seeded random 1280->dim head (MobileNet).
package testmodel

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/export"
	"github.com/grouploss/pipeline/weights"
)

// TinyCNN is the path of backbone/testdata/tiny_cnn.onnx.
func TinyCNN() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "backbone", "testdata", "tiny_cnn.onnx")
}

// Tiny writes the tiny test CNN cut at its pooled 4-d features with the 4->3 Linear head
// y = W x + B (W row-major, below), 6x6 ImageNet preprocessing, into a temporary folder of the
// test and returns the model's path.
func Tiny(t testing.TB) string {
	t.Helper()
	pre := data.DefaultPreprocess()
	pre.Width, pre.Height = 6, 6
	head := export.Linear{In: 4, Out: 3, W: TinyW, B: TinyB}
	return write(t, TinyCNN(), false, pre, head)
}

// TinyW and TinyB are Tiny's head weights.
var (
	TinyW = []float32{0.5, -0.2, 0.1, 0.3, -0.4, 0.6, 0.2, -0.1, 0.3, 0.3, -0.5, 0.2}
	TinyB = []float32{0.05, -0.05, 0.1}
)

// MobileNet writes the shared int8 MobileNetV2 (converted to float on CPUs without VNNI, as
// `pipeline run` does) cut at its 1280-d features with a random 1280->dim head (seed 1), at the
// default 224x224 preprocessing, and returns the model's path. It skips the test when the shared
// model is absent.
func MobileNet(t testing.TB, dim int) string {
	t.Helper()
	return MobileNetAt(t, dim, data.DefaultPreprocess())
}

// MobileNetAt is MobileNet with the preprocessing pre (its size is the model's input size: the
// network is fully convolutional up to its global pooling).
func MobileNetAt(t testing.TB, dim int, pre data.Preprocess) string {
	t.Helper()
	src := testenv.Int8Model(t)
	r := rand.New(rand.NewPCG(1, 2))
	head := export.Linear{In: 1280, Out: dim, W: make([]float32, 1280*dim), B: make([]float32, dim)}
	for i := range head.W {
		head.W[i] = float32(r.NormFloat64() / 36)
	}
	return write(t, src, true, pre, head)
}

func write(t testing.TB, src string, dequantize bool, pre data.Preprocess, head export.Layer) string {
	t.Helper()
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnxpb.Unmarshal(raw, src)
	if err != nil {
		t.Fatal(err)
	}
	if dequantize {
		info, err := backbone.InspectBytes(raw, src)
		if err != nil {
			t.Fatal(err)
		}
		if backbone.UseFloat(backbone.DequantizeAuto, info, backbone.CPU()) {
			if m, _, err = weights.DequantizeModel(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	cut, ci, err := backbone.Cut(m, "")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := export.Write(path, cut, ci, []export.Layer{head}, export.Metadata{Preprocess: pre.Metadata(), ToolVersion: "test",
		SourceSHA256: hex.EncodeToString(sum[:])}); err != nil {
		t.Fatal(err)
	}
	return path
}
