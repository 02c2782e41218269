package weights

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/backbone/graph"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/testenv"
)

// bnModel is x [N,3,6,6] -> Conv a (3x3, pad 1, no bias) -> BatchNormalization bn1 -> Relu ->
// Conv b (1x1, bias) -> BatchNormalization bn2 -> GlobalAveragePool -> y [N,5,1,1], with random
// weights and BN statistics.
func bnModel(r *rand.Rand) *onnx.ModelProto {
	rnd := func(n int, lo, hi float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(lo + (hi-lo)*r.Float64())
		}
		return v
	}
	inits := []*onnx.TensorProto{
		onnxpb.FloatTensor("a.w", []int64{4, 3, 3, 3}, rnd(4*27, -0.5, 0.5)),
		onnxpb.FloatTensor("bn1.s", []int64{4}, rnd(4, 0.5, 1.5)),
		onnxpb.FloatTensor("bn1.b", []int64{4}, rnd(4, -0.2, 0.2)),
		onnxpb.FloatTensor("bn1.m", []int64{4}, rnd(4, -0.3, 0.3)),
		onnxpb.FloatTensor("bn1.v", []int64{4}, rnd(4, 0.5, 2)),
		onnxpb.FloatTensor("b.w", []int64{5, 4, 1, 1}, rnd(20, -0.5, 0.5)),
		onnxpb.FloatTensor("b.b", []int64{5}, rnd(5, -0.1, 0.1)),
		onnxpb.FloatTensor("bn2.s", []int64{5}, rnd(5, 0.5, 1.5)),
		onnxpb.FloatTensor("bn2.b", []int64{5}, rnd(5, -0.2, 0.2)),
		onnxpb.FloatTensor("bn2.m", []int64{5}, rnd(5, -0.3, 0.3)),
		onnxpb.FloatTensor("bn2.v", []int64{5}, rnd(5, 0.5, 2)),
	}
	nodes := []*onnx.NodeProto{
		onnxpb.Node("Conv", "a", []string{"x", "a.w"}, []string{"a.out"}, onnxpb.AttrInts("pads", 1, 1, 1, 1)),
		onnxpb.Node("BatchNormalization", "bn1", []string{"a.out", "bn1.s", "bn1.b", "bn1.m", "bn1.v"}, []string{"bn1.out"}),
		onnxpb.Node("Relu", "relu", []string{"bn1.out"}, []string{"relu.out"}),
		onnxpb.Node("Conv", "b", []string{"relu.out", "b.w", "b.b"}, []string{"b.out"}),
		onnxpb.Node("BatchNormalization", "bn2", []string{"b.out", "bn2.s", "bn2.b", "bn2.m", "bn2.v"}, []string{"bn2.out"}),
		onnxpb.Node("GlobalAveragePool", "gap", []string{"bn2.out"}, []string{"y"}),
	}
	return model(nodes, inits,
		[]*onnx.ValueInfoProto{onnxpb.ValueInfo("x", onnxpb.Float, "N", 3, 6, 6)},
		[]*onnx.ValueInfoProto{onnxpb.ValueInfo("y", onnxpb.Float, "N", 5, 1, 1)})
}

// foldsOf parses graph.Graph.Folded ("conv <- bn").
func foldsOf(t *testing.T, g *graph.Graph) []Fold {
	t.Helper()
	var fs []Fold
	for _, s := range g.Folded() {
		c, b, ok := strings.Cut(s, " <- ")
		if !ok {
			t.Fatalf("Folded entry %q", s)
		}
		fs = append(fs, Fold{Conv: c, BatchNorm: b})
	}
	return fs
}

// paramValues returns the graph's parameters as float32 write-back values, each perturbed by
// rel times N(0, 1) times its RMS (rel 0: unchanged).
func paramValues(g *graph.Graph, r *rand.Rand, rel float64) map[string][]float32 {
	vals := map[string][]float32{}
	for _, p := range g.Params() {
		var ss float64
		for _, v := range p.Value {
			ss += v * v
		}
		rms := math.Sqrt(ss / float64(len(p.Value)))
		for i := range p.Value {
			p.Value[i] += rel * rms * r.NormFloat64()
		}
		f := make([]float32, len(p.Value))
		for i, v := range p.Value {
			f[i] = float32(v)
		}
		vals[p.Name] = f
	}
	return vals
}

func maxAbs(v []float32) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, math.Abs(float64(x)))
	}
	return m
}

// TestWriteBackFoldedBN decodes a Conv+BN model with both BNs folded, writes the (unchanged, then
// perturbed) Params back and runs the result in onnxruntime: unchanged Params reproduce the
// original model (max |diff| <= 1e-5 * max |y|: only the folding's rounding differs); perturbed
// ones reproduce the Go forward pass of the decoded graph (<= 1e-5 * max |y|) and differ from
// the original (> 1e-2 * max |y|), so the check can fail. The written model has no
// BatchNormalization, the folded bias of Conv a (which had none) is named "bn1.b", and the BN
// statistics are dropped.
func TestWriteBackFoldedBN(t *testing.T) {
	ortInit(t)
	r := rand.New(rand.NewPCG(1, 2))
	m := bnModel(r)
	const n = 3
	x := make([]float32, n*3*6*6)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	shape := []int64{n, 3, 6, 6}
	orig := ortRun(t, m, "x", x, shape, []string{"y"})[0]
	scale := maxAbs(orig)

	g, err := graph.Decode(m, graph.Options{From: []string{"x"}, To: "y", Trainable: true})
	if err != nil {
		t.Fatal(err)
	}
	folds := foldsOf(t, g)
	if len(folds) != 2 {
		t.Fatalf("Folded = %v, want both BatchNormalizations", g.Folded())
	}
	same, err := WriteBack(m, paramValues(g, r, 0), folds)
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range same.Graph.Node {
		if nd.OpType == "BatchNormalization" {
			t.Fatalf("node %q is still in the written model", nd.Name)
		}
		if nd.Name == "a" && (len(nd.Input) != 3 || nd.Input[2] != "bn1.b" || nd.Output[0] != "bn1.out") {
			t.Fatalf("Conv a reads %v, writes %v; want bias bn1.b and output bn1.out", nd.Input, nd.Output)
		}
	}
	inits := onnxpb.Initializers(same.Graph)
	for _, name := range []string{"bn1.s", "bn1.m", "bn1.v", "bn2.s", "bn2.b", "bn2.m", "bn2.v"} {
		if inits[name] != nil {
			t.Errorf("initializer %q of a folded BN was kept", name)
		}
	}
	if len(m.Graph.Node) != 6 || onnxpb.Initializers(m.Graph)["bn1.s"] == nil {
		t.Fatal("WriteBack modified its input model")
	}
	got := ortRun(t, same, "x", x, shape, []string{"y"})[0]
	if d := testenv.MaxAbsDiff(got, orig); d > 1e-5*scale {
		t.Fatalf("unchanged weights: max |written - original| = %.3g (max |y| %.3g)", d, scale)
	} else {
		t.Logf("unchanged weights: max |written - original| = %.2g (max |y| %.3g)", d, scale)
	}

	pert, err := WriteBack(m, paramValues(g, r, 0.2), folds)
	if err != nil {
		t.Fatal(err)
	}
	want, err := g.Infer([][]float32{x}, n)
	if err != nil {
		t.Fatal(err)
	}
	got = ortRun(t, pert, "x", x, shape, []string{"y"})[0]
	if d := testenv.MaxAbsDiff(got, want); d > 1e-5*scale {
		t.Fatalf("perturbed weights: max |onnxruntime - Go| = %.3g (max |y| %.3g)", d, scale)
	} else {
		t.Logf("perturbed weights: max |onnxruntime - Go| = %.2g; moved from the original by %.2g", d, testenv.MaxAbsDiff(got, orig))
	}
	if d := testenv.MaxAbsDiff(got, orig); d < 1e-2*scale {
		t.Fatalf("perturbed weights changed the output by only %.3g", d)
	}
}

// TestWriteBackMobileNetTail decodes the last inverted-residual block + final Conv + pooling of
// the dequantized MobileNetV2 (no BatchNormalization: the int8 model has them folded already),
// writes unchanged and perturbed Params back and compares the whole model in onnxruntime on 4
// CUB images: unchanged weights give the original pooled features exactly (identical
// initializers); perturbed ones give the Go tail's output on onnxruntime's activations of the
// cut (max |diff| <= 1e-4 * max |features|) and differ from the original.
func TestWriteBackMobileNetTail(t *testing.T) {
	ortInit(t)
	dir := sharedDir(t)
	f, _, err := DequantizeModel(loadShared(t))
	if err != nil {
		t.Fatal(err)
	}
	const (
		cut    = "452_quantized"
		pooled = "464_quantized"
		n      = 4
	)
	imgs := loadImages(t, filepath.Join(dir, "data", "cub100"), n)
	shape := []int64{n, 3, 224, 224}
	run := func(m *onnx.ModelProto, out string) []float32 {
		c := onnxpb.Clone(m)
		c.Graph.Output = nil
		c.Graph.ValueInfo = nil
		addOutput(c, out, onnx.TensorProto_FLOAT)
		return ortRun(t, c, "input", imgs, shape, []string{out})[0]
	}
	orig := run(f, pooled)
	act := run(f, cut)
	scale := maxAbs(orig)

	g, err := graph.Decode(f, graph.Options{From: []string{cut}, To: pooled, Trainable: true, InputShapes: [][]int{{160, 7, 7}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Folded()) != 0 {
		t.Fatalf("unexpected folds %v", g.Folded())
	}
	r := rand.New(rand.NewPCG(3, 4))
	same, err := WriteBack(f, paramValues(g, r, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := testenv.MaxAbsDiff(run(same, pooled), orig); d != 0 {
		t.Fatalf("unchanged weights: max |written - original| = %g, want 0", d)
	}
	pert, err := WriteBack(f, paramValues(g, r, 0.05), nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := g.Infer([][]float32{act}, n)
	if err != nil {
		t.Fatal(err)
	}
	got := run(pert, pooled)
	d := testenv.MaxAbsDiff(got, want)
	t.Logf("%d params written back; perturbed: max |onnxruntime - Go| = %.2g, moved from the original by %.2g (max |features| %.3g)",
		len(g.Params()), d, testenv.MaxAbsDiff(got, orig), scale)
	if d > 1e-4*scale {
		t.Fatalf("perturbed weights: max |onnxruntime - Go| = %.3g > 1e-4 * %.3g", d, scale)
	}
	if testenv.MaxAbsDiff(got, orig) < 1e-2*scale {
		t.Fatal("perturbed weights did not change the features")
	}
}

func TestWriteBackErrors(t *testing.T) {
	m := bnModel(rand.New(rand.NewPCG(5, 6)))
	w27 := make([]float32, 4*27)
	cases := []struct {
		name   string
		values map[string][]float32
		folds  []Fold
		want   string
	}{
		{"unknown tensor", map[string][]float32{"nope": {1}}, nil, `"nope" is not an initializer`},
		{"wrong length", map[string][]float32{"a.w": {1, 2}}, nil, `"a.w" has 108 values`},
		{"unknown conv", nil, []Fold{{Conv: "zz", BatchNorm: "bn1"}}, `no Conv node "zz"`},
		{"not a BN", nil, []Fold{{Conv: "a", BatchNorm: "relu"}}, `no BatchNormalization node "relu"`},
		{"not adjacent", nil, []Fold{{Conv: "a", BatchNorm: "bn2"}}, "does not read the Conv's output"},
		{"no weight", nil, []Fold{{Conv: "a", BatchNorm: "bn1"}}, `no folded value for the Conv weight "a.w"`},
		{"no bias", map[string][]float32{"a.w": w27}, []Fold{{Conv: "a", BatchNorm: "bn1"}}, `no folded bias (want a value for "bn1.b_folded" or "bn1.b")`},
		{"twice", map[string][]float32{"a.w": w27, "bn1.b": make([]float32, 4)}, []Fold{{Conv: "a", BatchNorm: "bn1"}, {Conv: "a", BatchNorm: "bn1"}}, "folded twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := WriteBack(m, c.values, c.folds)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "weights: ") {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	// A second reader of the Conv's output forbids removing the BN.
	m2 := bnModel(rand.New(rand.NewPCG(5, 6)))
	m2.Graph.Output = append(m2.Graph.Output, onnxpb.ValueInfo("a.out", onnxpb.Float, "N", 4, 6, 6))
	if _, err := WriteBack(m2, map[string][]float32{"a.w": w27, "bn1.b": make([]float32, 4)}, []Fold{{Conv: "a", BatchNorm: "bn1"}}); err == nil ||
		!strings.Contains(err.Error(), "is read 2 times") {
		t.Fatalf("second reader: %v", err)
	}
}
