package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/pipeline"
)

// pointwiseModel writes a float CNN-like backbone: pixels [batch,3,8,8] -> op (Relu or Sqrt) ->
// GlobalAveragePool "pooled" (the feature tensor, 3 wide) -> Flatten -> Gemm(3->2) "logits".
// With Sqrt, an image with a channel below the ImageNet mean gets NaN features.
func pointwiseModel(t *testing.T, dir, op string) string {
	t.Helper()
	g := &onnx.GraphProto{
		Name: "pointwise",
		Node: []*onnx.NodeProto{
			onnxpb.Node(op, "op", []string{"pixels"}, []string{"act"}),
			onnxpb.Node("GlobalAveragePool", "pool", []string{"act"}, []string{"pooled"}),
			onnxpb.Node("Flatten", "flatten", []string{"pooled"}, []string{"flat"}, onnxpb.AttrInt("axis", 1)),
			onnxpb.Node("Gemm", "fc", []string{"flat", "fc.w", "fc.b"}, []string{"logits"}, onnxpb.AttrInt("transB", 1)),
		},
		Initializer: []*onnx.TensorProto{
			onnxpb.FloatTensor("fc.w", []int64{2, 3}, []float32{1, 0, -1, 0.5, 0.5, 0.5}),
			onnxpb.FloatTensor("fc.b", []int64{2}, []float32{0, 0}),
		},
		Input:  []*onnx.ValueInfoProto{onnxpb.ValueInfo("pixels", onnxpb.Float, "batch", 3, 8, 8)},
		Output: []*onnx.ValueInfoProto{onnxpb.ValueInfo("logits", onnxpb.Float, "batch", 2)},
	}
	m := &onnx.ModelProto{IrVersion: 7, OpsetImport: []*onnx.OperatorSetIdProto{{Version: 13}}, Graph: g}
	p := filepath.Join(dir, strings.ToLower(op)+".onnx")
	if err := onnxpb.SaveAtomic(p, m); err != nil {
		t.Fatal(err)
	}
	return p
}

const pointwiseConfig = `validation_classes: 1
backbone:
  train_blocks: 0
train_classes: 3
threads: 1
head:
  embedding_dim: 2
  init: random
sampler:
  args: {classes_per_batch: 2, samples_per_class: 2}
loss:
  name: group
  args: {anchors_per_class: 1}
preprocess:
  size: [8, 8]
  workers: 2
eval:
  kmeans_restarts: 1
`

// TestRunNaNFeatures: a backbone that outputs NaN for some images stops the run at extraction
// with exit 3, naming the step, the feature tensor and the image; nothing is trained, and the
// NaN features are not cached.
func TestRunNaNFeatures(t *testing.T) {
	needORT(t)
	dir := t.TempDir()
	manifest := badDataset(t, filepath.Join(dir, "data"), []int{4, 4, 4, 4})
	cfg := badWrite(t, filepath.Join(dir, "cfg.yaml"), pointwiseConfig+"optimizer:\n  epochs: 2\n")
	out, cache := filepath.Join(dir, "run"), filepath.Join(dir, "cache")
	r := badRun("--config", cfg, "--data", manifest, "--backbone", pointwiseModel(t, dir, "Sqrt"), "--out", out, "--cache", cache)
	want := `pipeline: extract: train: non-finite value: tensor "pooled" is NaN at row 0, column 0, for image "` +
		filepath.Join(dir, "data", "c0", "0.png") + `"`
	if r.code != 3 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "hint: the backbone computes NaN/Inf for this image") {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 3 and %q", r.code, r.stderr, want)
	}
	m := checkRunFolderComplete(t, out)
	if m["status"] != "failed" || !strings.Contains(m["error"].(string), "non-finite") {
		t.Fatalf("metrics.json status %v error %v", m["status"], m["error"])
	}
	for _, f := range []string{"checkpoint.ckpt", "last.ckpt"} {
		if _, err := os.Stat(filepath.Join(out, f)); err == nil {
			t.Errorf("%s written for a run that never trained", f)
		}
	}
	if feats, _ := filepath.Glob(filepath.Join(cache, "*.feat")); len(feats) != 0 {
		t.Errorf("NaN features were cached: %v", feats)
	}
}

// TestRunDivergesKeepsCheckpoints: a run whose training blows up at epoch 3 (the learning rate
// is multiplied by 1e300 after epoch 2) stops with exit 3 naming the epoch and step, and keeps
// the last good checkpoints: last.ckpt after epoch 2 and checkpoint.ckpt of the best epoch. A
// resume replays epoch 3 from last.ckpt, stops the same way and loses nothing.
func TestRunDivergesKeepsCheckpoints(t *testing.T) {
	needORT(t)
	dir := t.TempDir()
	manifest := badDataset(t, filepath.Join(dir, "data"), []int{6, 6, 6, 6})
	cfg := badWrite(t, filepath.Join(dir, "cfg.yaml"), pointwiseConfig+"optimizer:\n  epochs: 5\n  args: {lr: 0.001}\n  lr_schedule: {args: {steps: [2], gamma: 1.0e+300}}\n")
	out := filepath.Join(dir, "run")
	r := badRun("--config", cfg, "--data", manifest, "--backbone", pointwiseModel(t, dir, "Relu"), "--out", out, "--cache", filepath.Join(dir, "cache"))
	if r.code != 3 || !strings.Contains(r.stderr, "non-finite value") || !strings.Contains(r.stderr, "epoch 3 step") ||
		!strings.Contains(r.stderr, "the last completed epoch's "+filepath.Join(out, "last.ckpt")) {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	m := checkRunFolderComplete(t, out)
	if m["status"] != "failed" {
		t.Fatalf("metrics.json status %v", m["status"])
	}
	last, err := pipeline.LoadCheckpoint(filepath.Join(out, "last.ckpt"))
	if err != nil || last.Epoch != 2 || last.Train == nil || len(last.Train.History) != 3 {
		t.Fatalf("last.ckpt: %v, epoch %v", err, last)
	}
	best, err := pipeline.LoadCheckpoint(filepath.Join(out, "checkpoint.ckpt"))
	if err != nil || best.Epoch > 2 {
		t.Fatalf("checkpoint.ckpt: %v, %+v", err, best)
	}
	for _, p := range append(last.Params, best.Params...) {
		for _, v := range p.Value {
			if v != v || v > 1e30 || v < -1e30 {
				t.Fatalf("checkpoint holds %v in %s", v, p.Name)
			}
		}
	}
	before, _ := os.ReadFile(filepath.Join(out, "last.ckpt"))
	r2 := badRun("--resume", out)
	if r2.code != 3 || !strings.Contains(r2.stderr, "epoch 3 step") {
		t.Fatalf("resume: exit %d, stderr:\n%s", r2.code, r2.stderr)
	}
	after, _ := os.ReadFile(filepath.Join(out, "last.ckpt"))
	if !bytes.Equal(before, after) {
		t.Error("the resumed run changed last.ckpt although it did not complete an epoch")
	}
	var doc struct{ Training map[string]any }
	raw, _ := os.ReadFile(filepath.Join(out, "metrics.json"))
	json.Unmarshal(raw, &doc)
	if doc.Training["resumed_from_epoch"] != float64(2) {
		t.Errorf("resumed_from_epoch %v, want 2", doc.Training["resumed_from_epoch"])
	}
}
