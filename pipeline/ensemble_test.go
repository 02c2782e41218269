package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/export"
)

// tinyCNN is the 6x6-input, 4-d-feature test backbone.
var tinyCNN = filepath.Join("..", "backbone", "testdata", "tiny_cnn.onnx")

// colorDataset writes per images (12x12 PNG: the class colour plus noise) of each of classes
// classes and returns their manifest.
func colorDataset(t *testing.T, classes, per int) string {
	t.Helper()
	return colorDatasetOf(t, classes, per, func(c int) [3]int {
		return [3]int{(c * 97) % 256, (c*53 + 80) % 256, (c*151 + 160) % 256}
	})
}

// colorDatasetOf is colorDataset with the mean colour of class c given by base.
func colorDatasetOf(t *testing.T, classes, per int, base func(c int) [3]int) string {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(int64(classes*100 + per)))
	var b strings.Builder
	b.WriteString("path,label\n")
	for c := 0; c < classes; c++ {
		base := base(c)
		for i := 0; i < per; i++ {
			img := image.NewRGBA(image.Rect(0, 0, 12, 12))
			for y := 0; y < 12; y++ {
				for x := 0; x < 12; x++ {
					var px [3]uint8
					for k := range px {
						px[k] = uint8(min(255, max(0, base[k]+rng.Intn(121)-60)))
					}
					img.Set(x, y, color.RGBA{px[0], px[1], px[2], 255})
				}
			}
			rel := fmt.Sprintf("c%d/%d.png", c, i)
			var buf bytes.Buffer
			if err := png.Encode(&buf, img); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, rel), buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s,%d\n", rel, c)
		}
	}
	p := filepath.Join(dir, "manifest.csv")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// tinyConfig is a run of a few seconds: the tiny CNN on colorDataset(8, 10), 3-d embeddings,
// 1 epoch, 3 x 4 batches, flip averaging on (the default).
func tinyConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := config.DefaultConfig()
	cfg.Data = colorDataset(t, 8, 10)
	cfg.Backbone.Path = tinyCNN
	cfg.Preprocess.Size = [2]int{6, 6}
	cfg.Cache = filepath.Join(t.TempDir(), "cache")
	cfg.Out = filepath.Join(t.TempDir(), "run")
	cfg.ValidationClasses = 1
	cfg.Threads = 1
	cfg.Head.EmbeddingDim = 3
	cfg.Sampler = config.SamplerConfig{ClassesPerBatch: 3, SamplesPerClass: 4}
	cfg.Loss.AnchorsPerClass = 1
	cfg.Optimizer.Epochs = 1
	cfg.Optimizer.LR = 1e-3
	cfg.Eval.KMeansRestarts = 1
	cfg.Backbone.TrainBlocks, cfg.Head.Center = 0, false // the head-only path (tiny_cnn has no blocks)
	return cfg
}

// TestRunEnsemble: ensemble 2 trains two heads (seeds 1 and 2) on the same features, reports each,
// evaluates and exports their concatenation as one model that onnxruntime reproduces.
func TestRunEnsemble(t *testing.T) {
	needORT(t)
	cfg := tinyConfig(t)
	cfg.Ensemble = 2
	cfg.Optimizer.Epochs = 2
	// No model selection: with it, both members could keep their (deterministic) epoch-0
	// initialization, and the seed would make no difference.
	cfg.ValidationClasses = 0
	sum, err := Run(context.Background(), cfg, RunEnv{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Members) != 2 || sum.Members[0].Seed != 1 || sum.Members[1].Seed != 2 {
		t.Fatalf("members: %+v", sum.Members)
	}
	if sum.Export.EmbeddingDim != 6 || sum.Export.MaxAbsDiff > 1e-4 || sum.Export.CheckedRows == 0 {
		t.Fatalf("export: %+v", sum.Export)
	}
	var params [2][]NamedTensor
	for k, m := range sum.Members {
		ck, err := LoadCheckpoint(filepath.Join(cfg.Out, m.Checkpoint))
		if err != nil {
			t.Fatal(err)
		}
		if ck.Config.Seed != m.Seed || ck.Epoch != 2 {
			t.Errorf("member %d checkpoint: seed %d epoch %d, want seed %d epoch 2", k, ck.Config.Seed, ck.Epoch, m.Seed)
		}
		params[k] = ck.Params
	}
	if reflect.DeepEqual(params[0], params[1]) {
		t.Errorf("the two members have identical parameters: different seeds should give different heads")
	}
	if want := sum.Members[0].TrainSeconds + sum.Members[1].TrainSeconds; math.Abs(sum.Timing.TrainSeconds-want) > 1e-9 {
		t.Errorf("train seconds %g, want the members' sum %g", sum.Timing.TrainSeconds, want)
	}
	for _, m := range sum.Members {
		if _, err := os.Stat(filepath.Join(cfg.Out, m.Checkpoint)); err != nil {
			t.Errorf("member checkpoint: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.Out, "member-2", lastCheckpointFile)); err == nil {
		t.Errorf("member-2/%s left behind by a finished run", lastCheckpointFile)
	}
	info, err := backbone.Inspect(sum.Export.Path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Outputs[0].ShapeString() != "[batch,6]" || info.Metadata["ensemble"] != "2" {
		t.Errorf("exported output %s, metadata ensemble %q", info.Outputs[0].ShapeString(), info.Metadata["ensemble"])
	}
	raw, err := os.ReadFile(filepath.Join(cfg.Out, "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Members []map[string]any `json:"members"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc.Members) != 2 || doc.Members[1]["trained"] == nil {
		t.Fatalf("metrics.json members: %v %v", doc.Members, err)
	}
	t.Logf("members R@1 %.3f %.3f, ensemble %.3f; export max |diff| %.2g",
		sum.Members[0].Trained.RecallAt1, sum.Members[1].Trained.RecallAt1, sum.Trained.RecallAt1, sum.Export.MaxAbsDiff)
}

// TestEnsembleModel: the ensemble embedding is the concatenation of the members' normalized
// embeddings, and its export layers hoist the shared feature transform out of the branches.
func TestEnsembleModel(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	n := 4
	x := make([]float32, n*5)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	src := frozenFeatures{feats: x, d: 5} // no mirrors: flip averaging embeds the images
	items := []int{0, 1, 2, 3}
	member := func(emb int) *headModel {
		h, err := head.New(head.Config{In: 5, Emb: emb, Classes: 3, DType: head.Float32}, rng)
		if err != nil {
			t.Fatal(err)
		}
		return &headModel{src: src, h: h, normalize: true, flipTTA: true}
	}
	e := &ensembleModel{members: []model{member(2), member(3)}}
	if e.dim() != 5 {
		t.Fatalf("dim %d, want 5", e.dim())
	}
	got, err := e.embedItems(items)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		off := 0
		for _, m := range e.members {
			z, err := m.embedItems(items)
			if err != nil {
				t.Fatal(err)
			}
			w := m.dim()
			var s float64
			for _, v := range z[i*w : (i+1)*w] {
				s += float64(v) * float64(v)
			}
			for j := 0; j < w; j++ {
				want := float64(z[i*w+j]) / math.Sqrt(s)
				if d := math.Abs(float64(got[i*5+off+j]) - want); d > 1e-6 {
					t.Fatalf("row %d member part %d value %d: %g, want %g", i, off, j, got[i*5+off+j], want)
				}
			}
			off += w
		}
	}
	ls, err := e.layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 3 {
		t.Fatalf("layers %#v, want FlipAverage, L2Normalize, Branches", ls)
	}
	_, flip := ls[0].(export.FlipAverage)
	_, norm := ls[1].(export.L2Normalize)
	br, ok := ls[2].(export.Branches)
	if !flip || !norm || !ok || len(br) != 2 || len(br[0]) != 1 || len(br[1]) != 1 {
		t.Fatalf("layers %#v", ls)
	}
	if l := br[1][0].(export.Linear); l.In != 5 || l.Out != 3 {
		t.Errorf("branch 1: %+v", l)
	}
}
