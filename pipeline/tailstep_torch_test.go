package pipeline

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/backbone/graph"
	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/pipeline/npy"
	"github.com/grouploss/pipeline/pipeline/train"
	"github.com/grouploss/pipeline/weights"
)

// TestTailStepMatchesPyTorch runs one training step of the last block of the float MobileNetV2
// (+ final 1x1 Conv and pooling) and the head as one gorgonia graph, in float64, on 12 random
// activations (4 classes x 3), and compares the loss and the gradients of every Conv weight of
// the tail and of every head parameter with PyTorch's on the same tail, head values and batch
// (scripts/ref_tail_step.py, float64): loss to 1e-9 relative, each gradient tensor to 1e-6 of
// its largest value. Then it trains the float32 graph for 6 Adam steps on the batch and checks
// that the loss falls. Skipped without ../shared or /usr/bin/python3 with torch and onnx.
func TestTailStepMatchesPyTorch(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	shared := sharedDir(t)
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch, onnx").Run(); err != nil {
		t.Skipf("%s cannot import torch and onnx (%v): install python3-torch and python3-onnx", py, err)
	}
	q, err := onnxpb.Load(filepath.Join(shared, "models", "mobilenetv2-12-int8.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	fm, _, err := weights.DequantizeModel(q)
	if err != nil {
		t.Fatal(err)
	}
	const from, to = "452_quantized", "464_quantized"
	shape := []int{160, 7, 7}
	newModel := func(dt head.DType) *tailModel {
		g, err := graph.Decode(fm, graph.Options{From: []string{from}, To: to, Trainable: true, InputShapes: [][]int{shape}})
		if err != nil {
			t.Fatal(err)
		}
		h, err := head.New(head.Config{In: 1280, Emb: 32, Classes: 4, DType: dt}, rand.New(rand.NewSource(2)))
		if err != nil {
			t.Fatal(err)
		}
		m := &tailModel{tail: g, params: g.Params(), inDim: 160 * 49, featDim: 1280, views: 1,
			headModel: &headModel{h: h, normalize: true, loss: head.LossConfig{Kind: head.LossGroup,
				Group: head.GroupLoss{Temperature: 10, Iterations: 2, Scaling: 1, AnchorsPerClass: 1}}}}
		m.setTensors()
		return m
	}
	const n = 12
	rng := rand.New(rand.NewSource(7))
	x := make([]float32, n*160*49)
	for i := range x {
		x[i] = float32(2 * rng.NormFloat64())
	}
	labels := []int{0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3}
	anchors := train.Anchors(labels, 1)

	m := newModel(head.Float64)
	loss, err := m.Step(x, n, labels, anchors)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	modelPath := filepath.Join(dir, "float.onnx")
	if err := onnxpb.SaveAtomic(modelPath, fm); err != nil {
		t.Fatal(err)
	}
	if err := npy.Write(filepath.Join(dir, "input.npy"), x, n, len(x)/n); err != nil {
		t.Fatal(err)
	}
	headFiles := map[string]string{}
	for _, p := range m.h.Params() {
		v := make([]float32, len(p.Value))
		for i, f := range p.Value {
			v[i] = float32(f) // the float32 values are what both sides compute with
		}
		for i := range p.Value {
			p.Value[i] = float64(v[i])
		}
		rows := 1
		if len(p.Shape) == 2 {
			rows = p.Shape[0]
		}
		headFiles[p.Name] = filepath.Join(dir, p.Name+".npy")
		if err := npy.Write(headFiles[p.Name], v, rows, len(v)/rows); err != nil {
			t.Fatal(err)
		}
	}
	// The step again with the head values rounded as written.
	if loss, err = m.Step(x, n, labels, anchors); err != nil {
		t.Fatal(err)
	}
	flags := make([]int, n)
	for i, a := range anchors {
		if a {
			flags[i] = 1
		}
	}
	spec := map[string]any{"model": modelPath, "from": from, "to": to, "shape": shape,
		"input": filepath.Join(dir, "input.npy"), "labels": labels, "anchors": flags, "head": headFiles,
		"normalize": true, "temperature": 10, "iterations": 2, "scaling": 1,
		"ref": filepath.Join(shared, "reference", "ref_heads.py")}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	specPath := filepath.Join(dir, "spec.json")
	if err := os.WriteFile(specPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(py, filepath.Join("..", "scripts", "ref_tail_step.py"), "--spec", specPath)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ref_tail_step.py: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var ref struct {
		Loss  float64              `json:"loss"`
		Grads map[string][]float64 `json:"grads"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &ref); err != nil {
		t.Fatalf("ref_tail_step.py output: %v\n%s", err, stdout.String())
	}
	if d := math.Abs(loss-ref.Loss) / math.Abs(ref.Loss); d > 1e-9 {
		t.Errorf("loss %.12g, PyTorch %.12g (relative %.2g)", loss, ref.Loss, d)
	}
	t.Logf("loss %.12g, PyTorch %.12g", loss, ref.Loss)
	compare := func(name string, got, want []float64) {
		if len(got) != len(want) {
			t.Errorf("%s: %d gradient values, PyTorch %d", name, len(got), len(want))
			return
		}
		worst, scale := 0.0, 0.0
		for i := range want {
			worst = math.Max(worst, math.Abs(got[i]-want[i]))
			scale = math.Max(scale, math.Abs(want[i]))
		}
		if scale == 0 || worst > 1e-6*scale {
			t.Errorf("%s: max |ours - PyTorch| %.3g of max %.3g", name, worst, scale)
			return
		}
		t.Logf("%s: max |ours - PyTorch| %.2g (relative %.2g)", name, worst, worst/scale)
	}
	convs := 0
	for _, p := range m.params {
		if w, ok := ref.Grads[strings.ReplaceAll(p.Name, ".", "_")]; ok {
			compare("backbone/"+p.Name, p.Grad, w)
			convs++
		}
	}
	if convs != 4 { // the block's expansion, depthwise and projection Convs, and the final 1x1 Conv
		t.Errorf("compared %d Conv weights, want 4 (PyTorch gave %d tensors)", convs, len(ref.Grads))
	}
	for _, p := range m.h.Params() {
		compare(p.Name, p.Grad, ref.Grads[p.Name])
	}

	// Training the float32 graph on the batch lowers its loss.
	m = newModel(head.Float32)
	opt, err := train.NewOptimizer(train.OptAdam, 0)
	if err != nil {
		t.Fatal(err)
	}
	var losses []float64
	for range 6 {
		l, err := m.Step(x, n, labels, anchors)
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, l)
		opt.Step(m.Tensors(), 1e-3)
	}
	if !(losses[len(losses)-1] < 0.9*losses[0]) {
		t.Errorf("losses over 6 Adam steps %v: not falling by 10%%", losses)
	}
	t.Logf("float32 losses over 6 Adam steps: %.4g", losses)
}
