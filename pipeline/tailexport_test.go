package pipeline

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/graph"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
)

// TestInt8Prefixed: the export of a tail trained on the int8 model's activations
// (backbone.tail_prefix int8) computes, in onnxruntime, the int8 layers up to the cut (run as
// their own model) followed by the float tail (decoded and run by our graph), to float32
// rounding; and it is not the float conversion's model (its features differ from those).
func TestInt8Prefixed(t *testing.T) {
	shared := sharedDir(t)
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(shared, "models", "mobilenetv2-12-int8.onnx")
	q, err := onnxpb.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f := floatModel(t, path)
	cut := graph.TailCutPoints(f)[1] // two blocks
	_, fci, err := backbone.Cut(f, "")
	if err != nil {
		t.Fatal(err)
	}
	h, err := int8Prefixed(q, f, cut)
	if err != nil {
		t.Fatal(err)
	}
	hybrid, _, err := backbone.Cut(h, fci.Feature)
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{}
	for _, n := range hybrid.GetGraph().GetNode() {
		ops[n.GetOpType()]++
	}
	if ops["QLinearConv"] < 40 || ops["Conv"] < 5 {
		t.Fatalf("hybrid ops %v: want the int8 prefix's QLinearConvs and the float tail's Convs", ops)
	}

	const n = 3
	rng := rand.New(rand.NewSource(1))
	img := make([]float32, n*3*224*224)
	for i := range img {
		img[i] = float32(rng.NormFloat64())
	}
	run := func(m []byte, dim int) []float32 {
		t.Helper()
		s, err := ort.NewSession(m, ort.Options{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		out := make([]float32, n*dim)
		if err := s.Run(img, n, out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	hb, err := onnxpb.Marshal(hybrid)
	if err != nil {
		t.Fatal(err)
	}
	got := run(hb, fci.Dim)

	prefix, pci, err := backbone.Cut(q, cut)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := onnxpb.Marshal(prefix)
	if err != nil {
		t.Fatal(err)
	}
	acts := run(pb, pci.Dim)
	shape, err := tensorShape(f, cut)
	if err != nil {
		t.Fatal(err)
	}
	tail, err := graph.Decode(f, graph.Options{From: []string{cut}, To: fci.Feature, InputShapes: [][]int{shape}})
	if err != nil {
		t.Fatal(err)
	}
	want, err := tail.Infer([][]float32{acts}, n)
	if err != nil {
		t.Fatal(err)
	}
	fcut, _, err := backbone.Cut(f, fci.Feature)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := onnxpb.Marshal(fcut)
	if err != nil {
		t.Fatal(err)
	}
	floatFeats := run(fb, fci.Dim)
	d, dFloat, scale := 0.0, 0.0, 0.0
	for i := range want {
		d = math.Max(d, math.Abs(float64(got[i]-want[i])))
		dFloat = math.Max(dFloat, math.Abs(float64(floatFeats[i]-want[i])))
		scale = math.Max(scale, math.Abs(float64(want[i])))
	}
	t.Logf("hybrid vs int8 prefix + decoded tail: max |diff| %.2g; vs the float conversion %.2g (features up to %.3g)", d, dFloat, scale)
	if d > 1e-4*scale {
		t.Errorf("hybrid export differs from the int8 prefix + float tail by %g", d)
	}
	if dFloat < 1e-2*scale {
		t.Errorf("hybrid export is within %g of the float conversion: the int8 prefix was not used", dFloat)
	}
}

// TestRunTailInt8Prefix runs the tail on the int8 model's activations (backbone.tail_prefix
// int8, the int8 kernels forced with backbone.dequantize never so that any CPU runs it): the
// features and activations come out of one onnxruntime pass, equal bit for bit to a separate pass
// of the int8 prefix (a second run, whose features are cached); the exported model (int8 layers
// up to the cut) reproduces the in-process embeddings and says which prefix it holds.
func TestRunTailInt8Prefix(t *testing.T) {
	slowEndToEnd(t)
	cfg := smallTailConfig(t, 6, 8)
	cfg.Backbone.Dequantize = config.DequantizeNever
	cfg.Backbone.TailPrefix = config.TailPrefixInt8
	cfg.Optimizer.Epochs = 1
	var logs bytes.Buffer
	env := RunEnv{Log: slog.New(slog.NewTextHandler(&logs, nil))}
	sum, err := Run(context.Background(), cfg, env)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	ts := sum.Tail
	if ts.Prefix != "int8" || !ts.ActivationsWithFeatures || ts.ActivationHit {
		t.Fatalf("tail summary %+v: want the int8 prefix's activations from the features' pass", ts)
	}
	if sum.Export.MaxAbsDiff > 1e-4 || sum.Export.CheckedRows == 0 {
		t.Fatalf("export check: %+v", sum.Export)
	}
	m, err := onnxpb.Load(filepath.Join(cfg.Out, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	meta := map[string]string{}
	for _, p := range m.GetMetadataProps() {
		meta[p.GetKey()] = p.GetValue()
	}
	if meta["backbone.tail_prefix"] != "int8" {
		t.Errorf("model.onnx metadata %v: want backbone.tail_prefix int8", meta)
	}
	onePass, _, _, _, err := data.LoadFeatures(ts.ActivationCache)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(ts.ActivationCache); err != nil {
		t.Fatal(err)
	}
	cfg.Out = filepath.Join(t.TempDir(), "run2")
	sum2, err := Run(context.Background(), cfg, env)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, logs.String())
	}
	if sum2.Tail.ActivationsWithFeatures || sum2.Tail.ActivationHit {
		t.Fatalf("second run: %+v, want the activations from the prefix's own pass", sum2.Tail)
	}
	separate, _, _, _, err := data.LoadFeatures(sum2.Tail.ActivationCache)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(onePass, separate) {
		t.Fatalf("activations of the one-pass extraction differ from the prefix's (max |diff| %g)", testenv.MaxAbsDiff(onePass, separate))
	}
	if sum2.Trained != sum.Trained {
		t.Errorf("same activations, different results: %+v vs %+v", sum2.Trained, sum.Trained)
	}
}
