package infer_test

import (
	"errors"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/infer"
)

// embedNeedORT skips the test unless the onnxruntime library is configured.
func embedNeedORT(t *testing.T) {
	t.Helper()
	p := os.Getenv(ort.EnvVar)
	if _, err := os.Stat(p); p == "" || err != nil {
		t.Skip("onnxruntime library not found (" + ort.EnvVar + " unset or missing): run `make test`")
	}
}

func embedTinyModel(t *testing.T) string {
	t.Helper()
	embedNeedORT(t)
	path, err := exportTinyModel(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// TestEmbedMatchesBackboneAndHead recomputes the embeddings from the metadata's preprocessing,
// the cut backbone in onnxruntime and the head in Go: the exported model and Embed must agree
// within 1e-5, whatever the batch size.
func TestEmbedMatchesBackboneAndHead(t *testing.T) {
	model := embedTinyModel(t)
	imgs := []image.Image{gradient(32, 24, 0), gradient(7, 9, 40), gradient(6, 6, 90), gradient(50, 13, 200), gradient(3, 3, 7)}

	bb, err := backbone.Open(filepath.Join("..", "..", "backbone", "testdata", "tiny_cnn.onnx"), backbone.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	pre := data.DefaultPreprocess()
	pre.Width, pre.Height = 6, 6
	w := []float32{0.5, -0.2, 0.1, 0.3, -0.4, 0.6, 0.2, -0.1, 0.3, 0.3, -0.5, 0.2}
	bias := []float32{0.05, -0.05, 0.1}
	want := make([][]float32, len(imgs))
	for i, img := range imgs {
		in := make([]float32, pre.Size())
		if err := pre.Tensor(img, in); err != nil {
			t.Fatal(err)
		}
		f := make([]float32, bb.Dim())
		if err := bb.Features(in, 1, f); err != nil {
			t.Fatal(err)
		}
		y := make([]float64, 3)
		var sq float64
		for o := range y {
			y[o] = float64(bias[o])
			for k := range f {
				y[o] += float64(w[o*len(f)+k]) * float64(f[k])
			}
			sq += y[o] * y[o]
		}
		want[i] = make([]float32, 3)
		for o := range y {
			want[i][o] = float32(y[o] / math.Sqrt(sq))
		}
	}

	for _, batch := range []int{1, 2, 32} {
		e, err := infer.OpenEmbedder(model, infer.WithBatchSize(batch), infer.WithThreads(1), infer.WithWorkers(2))
		if err != nil {
			t.Fatal(err)
		}
		if e.Dim() != 3 || e.Preprocess() != pre {
			t.Errorf("batch %d: Dim %d, Preprocess %+v; want 3 and %+v", batch, e.Dim(), e.Preprocess(), pre)
		}
		got, err := e.Embed(imgs)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(imgs) {
			t.Fatalf("batch %d: %d embeddings for %d images", batch, len(got), len(imgs))
		}
		for i := range imgs {
			if d := testenv.MaxAbsDiff(got[i], want[i]); d > 1e-5 {
				t.Errorf("batch %d image %d: embedding %v, want %v (max diff %.3g > 1e-5)", batch, i, got[i], want[i], d)
			}
		}
		if err := e.Close(); err != nil {
			t.Error(err)
		}
		if err := e.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := e.Embed(imgs[:1]); err == nil {
			t.Error("Embed after Close succeeded")
		}
	}
}

func writePNG(t *testing.T, path string, img image.Image) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestEmbedFiles: decoding PNG files (lossless) gives the same embeddings as the images, in the
// order of the paths; a file that does not decode is an error naming it.
func TestEmbedFiles(t *testing.T) {
	model := embedTinyModel(t)
	dir := t.TempDir()
	var imgs []image.Image
	var paths []string
	for i := range 7 {
		img := gradient(10+3*i, 8+i, uint8(30*i))
		p := filepath.Join(dir, "img"+string(rune('a'+i))+".png")
		writePNG(t, p, img)
		imgs, paths = append(imgs, img), append(paths, p)
	}
	e, err := infer.OpenEmbedder(model, infer.WithBatchSize(3))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	want, err := e.Embed(imgs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.EmbedFiles(paths)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if d := testenv.MaxAbsDiff(got[i], want[i]); d > 1e-6 {
			t.Errorf("file %d: %v, want %v (max diff %.3g > 1e-6)", i, got[i], want[i], d)
		}
	}
	if got[0][0] == got[1][0] {
		t.Errorf("different images gave the same embedding %v", got[0])
	}

	bad := filepath.Join(dir, "broken.png")
	if err := os.WriteFile(bad, []byte("not a png"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = e.EmbedFiles([]string{paths[0], bad, paths[1]})
	var ie *data.ImageError
	if !errors.As(err, &ie) || ie.Path != bad || !strings.Contains(err.Error(), "broken.png") {
		t.Errorf("bad file: error %v, want a *data.ImageError naming %s", err, bad)
	}
}

// TestOpenEmbedderModels covers models that are not exported by this tool: without metadata the
// preprocessing must be given; a pinned batch of 1 is run one image at a time.
func TestOpenEmbedderModels(t *testing.T) {
	embedNeedORT(t)
	raw := filepath.Join("..", "..", "backbone", "testdata", "tiny_cnn.onnx") // [1,3,6,6] -> logits [1,3], no metadata
	_, err := infer.OpenEmbedder(raw)
	if err == nil || !strings.Contains(err.Error(), "preprocess.size") || pipeline.Hint(err) == "" {
		t.Errorf("model without metadata: error %v (hint %q), want one naming preprocess.size, with a hint", err, pipeline.Hint(err))
	}
	pre := data.DefaultPreprocess()
	pre.Width, pre.Height = 6, 6
	e, err := infer.OpenEmbedder(raw, infer.WithPreprocess(pre))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	imgs := []image.Image{gradient(8, 8, 1), gradient(9, 5, 70), gradient(12, 12, 150)}
	all, err := e.Embed(imgs)
	if err != nil {
		t.Fatal(err)
	}
	for i, img := range imgs {
		one, err := e.Embed([]image.Image{img})
		if err != nil {
			t.Fatal(err)
		}
		if d := testenv.MaxAbsDiff(all[i], one[0]); len(all[i]) != 3 || d > 1e-6 {
			t.Errorf("image %d: %v in a batch of 3, %v alone", i, all[i], one[0])
		}
	}

	big := pre
	big.Width, big.Height = 224, 224
	if _, err := infer.OpenEmbedder(raw, infer.WithPreprocess(big)); err == nil || !strings.Contains(err.Error(), "6x6") {
		t.Errorf("224x224 preprocessing on a 6x6 model: error %v, want one naming 6x6", err)
	}
	if _, err := infer.OpenEmbedder(filepath.Join(t.TempDir(), "missing.onnx")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing model: error %v, want os.ErrNotExist", err)
	}
	if _, err := infer.OpenEmbedder(raw, infer.WithPreprocess(pre), infer.WithBatchSize(0)); err == nil {
		t.Error("batch size 0 accepted")
	}
}

// TestEmbedTensors: EmbedTensors of preprocessed images is Embed of the images; Names are the
// exported model's; a tensor of the wrong length is an error.
func TestEmbedTensors(t *testing.T) {
	e, err := infer.OpenEmbedder(embedTinyModel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	imgs := []image.Image{gradient(32, 24, 0), gradient(7, 9, 40)}
	want, err := e.Embed(imgs)
	if err != nil {
		t.Fatal(err)
	}
	pre := e.Preprocess()
	in := make([]float32, 2*pre.Size())
	for i, img := range imgs {
		if err := pre.Tensor(img, in[i*pre.Size():(i+1)*pre.Size()]); err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.EmbedTensors(in, 2)
	if err != nil {
		t.Fatal(err)
	}
	if d := testenv.MaxAbsDiff(got, append(append([]float32(nil), want[0]...), want[1]...)); d != 0 {
		t.Errorf("EmbedTensors differs from Embed by %.3g", d)
	}
	if i, o := e.Names(); i != "images" || o != "embeddings" {
		t.Errorf("Names %q %q", i, o)
	}
	if _, err := e.EmbedTensors(in[1:], 2); err == nil || !strings.Contains(err.Error(), "for 2 images of 3x6x6") {
		t.Errorf("short tensor: %v", err)
	}
}
