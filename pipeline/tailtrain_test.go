package pipeline

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/graph"
	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/train"
	"github.com/grouploss/pipeline/weights"
)

// TestRunTailEndToEnd runs `pipeline run --train-blocks 1` on 8 CUB-100 classes x 10 images
// (4 trained on, no validation split, 2 epochs, 16-d embeddings) and checks: the exported
// model's embeddings of 32 evaluation images match the in-process ones (max |diff| <= 1e-4);
// every trained backbone tensor in model.onnx differs from the float backbone's (the tail was
// trained and written back) while the other initializers are unchanged; metrics.json has the
// tail section. A second run with a validation class reuses the cached activations and saves a
// checkpoint holding the backbone tensors.
func TestRunTailEndToEnd(t *testing.T) {
	slowEndToEnd(t)
	cfg := smallTailConfig(t, 8, 10)
	cfg.Backbone.TailPrefix = config.TailPrefixFloat // the same path on every CPU (TestRunTailInt8Prefix: int8)
	cfg.Optimizer.Epochs = 2
	var logs bytes.Buffer
	env := RunEnv{Log: slog.New(slog.NewTextHandler(&logs, nil))}
	sum, err := Run(context.Background(), cfg, env)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	ts := sum.Tail
	if ts == nil || ts.From != "452_quantized" || ts.To != "464_quantized" || !ts.Dequantized || ts.ActivationHit ||
		len(ts.ActivationShape) != 3 || ts.ActivationShape[0] != 160 || ts.Params == 0 {
		t.Fatalf("tail summary %+v", ts)
	}
	if sum.Export.MaxAbsDiff > 1e-4 || sum.Export.CheckedRows != 32 {
		t.Fatalf("export check: %+v", sum.Export)
	}
	t.Logf("export max |diff| %.2g; %d trained backbone values; float baseline R@1 %.3f, trained R@1 %.3f; %.2f s/epoch",
		sum.Export.MaxAbsDiff, ts.Params, ts.BaselineFloat.RecallAt1, sum.Trained.RecallAt1, sum.Timing.SecondsPerEpoch)
	if sum.Trained.RecallAt1 <= 0 || ts.BaselineFloat.RecallAt1 <= 0 || sum.Timing.Epochs != 2 {
		t.Fatalf("metrics %+v, float baseline %+v, timing %+v", sum.Trained, ts.BaselineFloat, sum.Timing)
	}
	raw, err := os.ReadFile(filepath.Join(cfg.Out, "metrics.json"))
	if err != nil || !strings.Contains(string(raw), `"baseline_float"`) || !strings.Contains(string(raw), `"train_blocks": 1`) {
		t.Fatalf("metrics.json lacks the tail section (%v)", err)
	}
	page, err := os.ReadFile(sum.Report)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"baseline, float backbone", "trained (Multi-Similarity, backbone tail &#43; head)", "fine-tuned backbone",
		"last 1 block(s), from &#34;452_quantized&#34; to &#34;464_quantized&#34;"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("report.html lacks %q", want)
		}
	}

	// The exported backbone: trained tensors moved, the others are the float model's.
	float := floatModel(t, cfg.Backbone.Path)
	g, err := graph.Decode(float, graph.Options{From: []string{ts.From}, To: ts.To, Trainable: true, InputShapes: [][]int{ts.ActivationShape}})
	if err != nil {
		t.Fatal(err)
	}
	exported, err := onnxpb.Load(filepath.Join(cfg.Out, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	got := onnxpb.Initializers(exported.Graph)
	trained := map[string]bool{}
	for _, p := range g.Params() {
		trained[p.Name] = true
		moved := maxAbsDiff(t, got[p.Name], p.Value)
		if !(moved > 1e-6) {
			t.Errorf("backbone tensor %q did not change (max |diff| %g)", p.Name, moved)
		}
	}
	same := 0
	for name, init := range onnxpb.Initializers(float.Graph) {
		if e := got[name]; e != nil && !trained[name] && init.GetDataType() == onnxpb.Float {
			v, _ := onnxpb.Floats(init)
			f64 := make([]float64, len(v))
			for i, x := range v {
				f64[i] = float64(x)
			}
			if d := maxAbsDiff(t, e, f64); d != 0 {
				t.Errorf("frozen backbone tensor %q changed by %g", name, d)
			}
			same++
		}
	}
	if same < 50 {
		t.Errorf("only %d frozen float initializers found in the export", same)
	}

	// Second run: cached activations, model selection on 1 validation class, checkpoint.
	cfg.Out = filepath.Join(t.TempDir(), "run2")
	cfg.ValidationClasses = 1
	cfg.Optimizer.Epochs = 1
	sum2, err := Run(context.Background(), cfg, env)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, logs.String())
	}
	if !sum2.Tail.ActivationHit || sum2.Tail.ActivationCache != ts.ActivationCache {
		t.Fatalf("second run did not use the activation cache: %+v", sum2.Tail)
	}
	if sum2.Tail.BaselineFloat != ts.BaselineFloat {
		t.Fatalf("float baseline differs with cached activations: %+v vs %+v", sum2.Tail.BaselineFloat, ts.BaselineFloat)
	}
	ck, err := LoadCheckpoint(filepath.Join(cfg.Out, "checkpoint.ckpt"))
	if err != nil || ck.Epoch != sum2.Training.BestEpoch {
		t.Fatalf("checkpoint: %v (best epoch %d)", err, sum2.Training.BestEpoch)
	}
	nb := 0
	for _, p := range ck.Params {
		if strings.HasPrefix(p.Name, tailParamPrefix) {
			nb++
		}
	}
	if nb != len(g.Params()) {
		t.Fatalf("checkpoint holds %d backbone tensors, want %d", nb, len(g.Params()))
	}
	if sum2.Export.MaxAbsDiff > 1e-4 {
		t.Fatalf("second export: %+v", sum2.Export)
	}
}

func maxAbsDiff(t *testing.T, got *onnx.TensorProto, want []float64) float64 {
	t.Helper()
	if got == nil {
		t.Fatal("tensor missing from the exported model")
	}
	v, err := onnxpb.Floats(got)
	if err != nil || len(v) != len(want) {
		t.Fatalf("tensor %q: %d values, want %d (%v)", got.GetName(), len(v), len(want), err)
	}
	m := 0.0
	for i := range v {
		m = math.Max(m, math.Abs(float64(v[i])-want[i]))
	}
	return m
}

// tinyTail is x [N,3,2,2] -> Conv 1x1 (3 -> 6, bias) -> GlobalAveragePool -> y [N,6,1,1]
// (no kinks, so that finite differences are smooth).
func tinyTail(t *testing.T, rng *rand.Rand) *graph.Graph {
	t.Helper()
	w := make([]float32, 18)
	b := make([]float32, 6)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	for i := range b {
		b[i] = float32(rng.NormFloat64()*0.1 + 0.5)
	}
	m := &onnx.ModelProto{IrVersion: 7, OpsetImport: []*onnx.OperatorSetIdProto{{Version: 13}}, Graph: &onnx.GraphProto{
		Node: []*onnx.NodeProto{
			onnxpb.Node("Conv", "c", []string{"x", "w", "b"}, []string{"c.out"}),
			onnxpb.Node("GlobalAveragePool", "p", []string{"c.out"}, []string{"y"}),
		},
		Initializer: []*onnx.TensorProto{onnxpb.FloatTensor("w", []int64{6, 3, 1, 1}, w), onnxpb.FloatTensor("b", []int64{6}, b)},
		Input:       []*onnx.ValueInfoProto{onnxpb.ValueInfo("x", onnxpb.Float, "N", 3, 2, 2)},
		Output:      []*onnx.ValueInfoProto{onnxpb.ValueInfo("y", onnxpb.Float, "N", 6, 1, 1)},
	}}
	g, err := graph.Decode(m, graph.Options{From: []string{"x"}, To: "y", Trainable: true})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestTailStepGradient checks tailModel.Step's gradients of the tail parameters (one gorgonia
// graph: tail, centering, L2 normalization, head, loss) against central finite differences of
// the loss. With a Float64 head the whole graph computes in float64, so the step is 1e-5 and the
// tolerance 1e-6 relative to max(|fd|, 1e-2); a missing normalization gradient gives errors of
// order 1.
func TestTailStepGradient(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	g := tinyTail(t, rng)
	h, err := head.New(head.Config{In: 6, Emb: 4, Classes: 3, DType: head.Float64}, rng)
	if err != nil {
		t.Fatal(err)
	}
	hm := &headModel{h: h, normalize: true, center: []float32{0.1, -0.2, 0.3, 0, 0.05, -0.1},
		loss: head.LossConfig{Kind: head.LossGroup, Group: head.GroupLoss{Temperature: 3, Iterations: 1, Scaling: 1, AnchorsPerClass: 1}}}
	m := &tailModel{headModel: hm, tail: g, params: g.Params(), inDim: 12, featDim: 6}
	const n = 9
	x := make([]float32, n*12)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	labels := []int{0, 0, 0, 1, 1, 1, 2, 2, 2}
	anchors := train.Anchors(labels, 1)
	if _, err := m.Step(x, n, labels, anchors); err != nil {
		t.Fatal(err)
	}
	grads := map[string][]float64{}
	for _, p := range m.params {
		grads[p.Name] = append([]float64(nil), p.Grad...)
	}
	const eps = 1e-5
	worst := 0.0
	for _, p := range m.params {
		for i := range p.Value {
			v := p.Value[i]
			p.Value[i] = v + eps
			up, err := m.Step(x, n, labels, anchors)
			if err != nil {
				t.Fatal(err)
			}
			p.Value[i] = v - eps
			down, err := m.Step(x, n, labels, anchors)
			if err != nil {
				t.Fatal(err)
			}
			p.Value[i] = v
			fd := (up - down) / (2 * eps)
			e := math.Abs(grads[p.Name][i]-fd) / math.Max(math.Abs(fd), 1e-2)
			worst = math.Max(worst, e)
			if e > 1e-6 {
				t.Errorf("d loss/d %s[%d] = %.6g, finite difference %.6g", p.Name, i, grads[p.Name][i], fd)
			}
		}
	}
	t.Logf("worst tail gradient error %.3g", worst)
}

// splitOptimizer steps the tail's tensors at ratio times the head's learning rate and keeps
// their optimizer states apart.
func TestSplitOptimizer(t *testing.T) {
	mk := func() train.Optimizer {
		o, err := train.NewOptimizer(train.OptAdam, 0)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	o := &splitOptimizer{head: mk(), tail: mk(), ratio: 0.1}
	params := []train.Tensor{
		{Name: "emb.weight", Value: []float64{1, 1}, Grad: []float64{1, -2}},
		{Name: tailParamPrefix + "w", Value: []float64{1, 1}, Grad: []float64{3, -4}},
	}
	o.Step(params, 1e-3)
	// Adam's first step moves each value by lr against the sign of its gradient.
	want := [][]float64{{1 - 1e-3, 1 + 1e-3}, {1 - 1e-4, 1 + 1e-4}}
	for i, p := range params {
		for j, v := range p.Value {
			if math.Abs(v-want[i][j]) > 1e-9 {
				t.Fatalf("%s[%d] = %.9g, want %.9g", p.Name, j, v, want[i][j])
			}
		}
	}
	st := o.State()
	if st.Steps != 1 || len(st.M) != 2 || st.M[tailParamPrefix+"w"] == nil {
		t.Fatalf("state %+v", st)
	}
	o2 := &splitOptimizer{head: mk(), tail: mk(), ratio: 0.1}
	if err := o2.SetState(st); err != nil {
		t.Fatal(err)
	}
	if s2 := o2.State(); s2.Steps != 1 || s2.M["emb.weight"][1] != st.M["emb.weight"][1] || s2.V[tailParamPrefix+"w"][0] != st.V[tailParamPrefix+"w"][0] {
		t.Fatalf("restored state %+v, want %+v", s2, st)
	}
}

// prepareTail resolves --train-blocks and --trainable-from (tensor or node) on the shared
// MobileNetV2 and refuses what it cannot cut at with config.ErrInvalid.
func TestPrepareTailCutPoints(t *testing.T) {
	shared := sharedDir(t)
	needORT(t)
	cfg := config.DefaultConfig()
	cfg.Backbone.Path = filepath.Join(shared, "models", "mobilenetv2-12-int8.onnx")
	bb, err := backbone.Open(cfg.Backbone.Path, backbone.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	float := floatModel(t, cfg.Backbone.Path)
	node452 := onnxpb.Producers(float.Graph)["452_quantized"].GetName() // the Clip after the block's Add
	cases := []struct {
		blocks int
		from   string
		cut    string
		shape  []int
		err    string
	}{
		{blocks: 1, cut: "452_quantized", shape: []int{160, 7, 7}},
		{blocks: 2, cut: "443_quantized", shape: []int{160, 7, 7}},
		{blocks: 4, cut: graph.TailCutPoints(float)[3], shape: []int{96, 14, 14}},
		{from: node452, cut: "452_quantized", shape: []int{160, 7, 7}},
		{from: "452_quantized", cut: "452_quantized", shape: []int{160, 7, 7}},
		{blocks: 18, err: "has 17 inverted-residual blocks"},
		{from: "nope", err: `trainable_from "nope" is neither a tensor`},
	}
	for _, c := range cases {
		cfg.Backbone.TrainBlocks, cfg.Backbone.TrainableFrom = c.blocks, c.from
		r := &runner{cfg: cfg, env: RunEnv{Log: slog.New(slog.DiscardHandler)}, sum: &Summary{}, bb: bb}
		s, err := r.prepareTail()
		if c.err != "" {
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), c.err) {
				t.Errorf("blocks %d from %q: error %v, want config.ErrInvalid with %q", c.blocks, c.from, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("blocks %d from %q: %v", c.blocks, c.from, err)
		}
		if s.cut != c.cut || !slices.Equal(s.shape, c.shape) || s.feature != "464_quantized" || !r.sum.Tail.Dequantized {
			t.Errorf("blocks %d from %q: cut %q shape %v feature %q, want %q %v", c.blocks, c.from, s.cut, s.shape, s.feature, c.cut, c.shape)
		}
	}
}

// floatModel returns the dequantized model at path.
// smallTailConfig is a run of the shared model's last block + a 16-d head on `per` images of the
// first `classes` CUB-100 classes (half trained on, no validation split), in temporary folders.
func smallTailConfig(t *testing.T, classes, per int) config.Config {
	t.Helper()
	shared := sharedDir(t)
	needORT(t)
	cfg := config.DefaultConfig()
	cfg.Data = smallCUB(t, shared, classes, per)
	cfg.Backbone.Path = filepath.Join(shared, "models", "mobilenetv2-12-int8.onnx")
	cfg.Backbone.TrainBlocks = 1
	cfg.Out = filepath.Join(t.TempDir(), "run")
	cfg.Cache = filepath.Join(t.TempDir(), "cache")
	cfg.ValidationClasses = 0
	cfg.Head.EmbeddingDim = 16
	cfg.Sampler = config.SamplerConfig{ClassesPerBatch: 3, SamplesPerClass: 4}
	return cfg
}

func floatModel(t *testing.T, path string) *onnx.ModelProto {
	t.Helper()
	m, err := onnxpb.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f, _, err := weights.DequantizeModel(m)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// tinyBlocks is a float backbone with two inverted-residual blocks, input [batch,3,8,8] and
// 20-d pooled features "pooled" (testdata/gentail).
var tinyBlocks = filepath.Join("testdata", "tiny_blocks.onnx")

// tinyBlocksWith writes a copy of tinyBlocks whose node named node computes op from its first
// input instead, and returns its path.
func tinyBlocksWith(t *testing.T, node, op string) string {
	t.Helper()
	m, err := onnxpb.Load(tinyBlocks)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range m.Graph.Node {
		if n.Name == node {
			n.OpType, n.Input, found = op, n.Input[:1], true
		}
	}
	if !found {
		t.Fatalf("no node %q in %s", node, tinyBlocks)
	}
	p := filepath.Join(t.TempDir(), strings.ToLower(op)+".onnx")
	if err := onnxpb.SaveAtomic(p, m); err != nil {
		t.Fatal(err)
	}
	return p
}

// tinyTailConfig is a tail run of a second or two on tinyBlocks and colorDataset(8, 10).
func tinyTailConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := tinyConfig(t)
	cfg.Backbone.Path = tinyBlocks
	cfg.Preprocess.Size = [2]int{8, 8}
	cfg.Head.EmbeddingDim = 4
	cfg.Backbone.TrainBlocks = 1
	return cfg
}

// TestTailValidationBeforeExtraction: a train_blocks or trainable_from the backbone cannot honour
// fails in Run before any feature or activation is extracted (no cache file, no run folder),
// with config.ErrInvalid naming the value, the tensor or the node and op, and a hint with valid values
// (the model's block inputs, or the first tensor after an op the engine cannot train, and how
// many blocks avoid it). The suggested train_blocks then trains.
func TestTailValidationBeforeExtraction(t *testing.T) {
	needORT(t)
	sigmoid := tinyBlocksWith(t, "b1.dw.clip", "Sigmoid") // inside block 1 of 2
	blockList := `the block inputs, last first: block1, stem`
	cases := []struct {
		name, model string
		blocks      int
		from        string
		err, hint   string
	}{
		{"too many blocks", tinyBlocks, 3, "", `backbone.train_blocks 3: "` + tinyBlocks + `" has 2 inverted-residual blocks`,
			"pass --train-blocks between 1 and 2, or --trainable-from with a tensor; " + blockList},
		{"unknown tensor", tinyBlocks, 0, "nope", `backbone.trainable_from "nope" is neither a tensor computed by a node nor a node`, blockList},
		{"inside a residual block", tinyBlocks, 0, "b1.dw.out",
			`backbone.trainable_from "b1.dw.out": the backbone from "b1.dw.out" to the features "pooled" cannot be trained: ` +
				`backbone/graph: tensor "pixels" (read by node "stem.conv") is not computed from From`, blockList},
		{"after the features", tinyBlocks, 0, "logits", `backbone.trainable_from "logits": the features "pooled" are not computed from it`, blockList},
		{"the features", tinyBlocks, 0, "pooled", `backbone.trainable_from "pooled": nothing to train between "pooled" and the features "pooled"`, blockList},
		{"unsupported op", sigmoid, 2, "",
			`backbone.train_blocks 2: the backbone from "stem" to the features "pooled" cannot be trained: backbone/graph: op "Sigmoid" (node "b1.dw.clip") is not supported for training`,
			`train fewer blocks (--train-blocks 1 or less), or pass --trainable-from "block1" (the first tensor after op "Sigmoid", node "b1.dw.clip", that alone carries the rest)`},
		{"unsupported op, trainable_from", sigmoid, 0, "stem", `op "Sigmoid" (node "b1.dw.clip") is not supported for training`,
			`pass --trainable-from "block1"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := tinyTailConfig(t)
			cfg.Backbone.Path, cfg.Backbone.TrainBlocks, cfg.Backbone.TrainableFrom = c.model, c.blocks, c.from
			_, err := Run(context.Background(), cfg, RunEnv{})
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("error %v\nwant config.ErrInvalid with %q", err, c.err)
			}
			if h := Hint(err); !strings.Contains(h, c.hint) {
				t.Errorf("hint %q, want it to contain %q", h, c.hint)
			}
			if _, err := os.Stat(cfg.Out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("run folder %q exists (%v): the run got past its checks", cfg.Out, err)
			}
			if _, err := os.Stat(cfg.Cache); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cache folder %q exists (%v): something was extracted", cfg.Cache, err)
			}
		})
	}
	t.Run("int8 prefix of a float model", func(t *testing.T) {
		cfg := tinyTailConfig(t)
		cfg.Backbone.TailPrefix = config.TailPrefixInt8
		_, err := Run(context.Background(), cfg, RunEnv{})
		want := `backbone.tail_prefix int8: the backbone "` + cfg.Backbone.Path + `" does not run int8 here`
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Fatalf("error %v\nwant config.ErrInvalid with %q", err, want)
		}
		if h := Hint(err); !strings.Contains(h, "--tail-prefix float") {
			t.Errorf("hint %q", h)
		}
		if _, err := os.Stat(cfg.Cache); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cache folder %q exists (%v): something was extracted", cfg.Cache, err)
		}
		cfg.Backbone.TailPrefix = config.TailPrefixAuto // float here: the backbone is float
		sum, err := Run(context.Background(), cfg, RunEnv{})
		if err != nil || sum.Tail.Prefix != "float" {
			t.Fatalf("auto on a float backbone: %v, tail %+v", err, sum.Tail)
		}
	})
	t.Run("suggested value trains", func(t *testing.T) {
		cfg := tinyTailConfig(t)
		cfg.Backbone.Path = sigmoid
		sum, err := Run(context.Background(), cfg, RunEnv{})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Tail.From != "block1" || sum.Tail.Params == 0 || sum.Status != "ok" {
			t.Fatalf("tail %+v, status %q", sum.Tail, sum.Status)
		}
	})
}
