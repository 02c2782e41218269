package export

import (
	"math"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// TestFeatureShift: the correction is the float mean minus the quantized mean, its size relative
// to the float mean; mismatched or non-finite means are errors.
func TestFeatureShift(t *testing.T) {
	delta, rel, err := FeatureShift([]float64{1, 2}, []float64{0.5, 2.5})
	if err != nil {
		t.Fatal(err)
	}
	if delta[0] != 0.5 || delta[1] != -0.5 || math.Abs(rel-math.Sqrt(0.5/5)) > 1e-12 {
		t.Errorf("delta %v, relative %v; want [0.5 -0.5], %v", delta, rel, math.Sqrt(0.5/5))
	}
	if _, _, err := FeatureShift([]float64{1, 2}, []float64{1}); err == nil {
		t.Error("2 float means and 1 quantized mean: no error")
	}
	if _, _, err := FeatureShift([]float64{1, 2}, []float64{1, math.NaN()}); err == nil {
		t.Error("a NaN mean: no error")
	}
}

// TestAddToTensor: in onnxruntime, the node reading the features and the graph output naming them
// both see relu(x) + delta; the original model is not changed.
func TestAddToTensor(t *testing.T) {
	ortLib(t)
	f := backbone.OutputName
	m := &onnx.ModelProto{IrVersion: 7, OpsetImport: []*onnx.OperatorSetIdProto{{Domain: "", Version: 13}}, Graph: &onnx.GraphProto{
		Name:        "features",
		Input:       []*onnx.ValueInfoProto{onnxpb.ValueInfo("x", onnxpb.Float, "N", 3)},
		Output:      []*onnx.ValueInfoProto{onnxpb.ValueInfo("y", onnxpb.Float, "N", 3), onnxpb.ValueInfo(f, onnxpb.Float, "N", 3)},
		Initializer: []*onnx.TensorProto{onnxpb.FloatTensor("two", nil, []float32{2})},
		Node: []*onnx.NodeProto{
			onnxpb.Node("Relu", "relu", []string{"x"}, []string{f}),
			onnxpb.Node("Mul", "head", []string{f, "two"}, []string{"y"}),
		},
	}}
	delta := []float32{0.5, -1, 0.25}
	c, err := AddToTensor(m, f, delta)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Graph.Node[0].Output[0]; got != f || len(m.Graph.Node) != 2 {
		t.Fatalf("the original model changed: relu writes %q, %d nodes", got, len(m.Graph.Node))
	}
	p, err := ort.NewProbe(mustMarshal(t, c), []string{f, "y"}, ort.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	x := []float32{-1, 2, 0.5, 3, -2, -0.25}
	outs, err := p.Run(x, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range x {
		want := float32(math.Max(float64(v), 0)) + delta[i%3]
		if outs[0][i] != want || outs[1][i] != 2*want {
			t.Fatalf("x %v: features %v, y %v; want features relu(x)+%v", x, outs[0], outs[1], delta)
		}
	}
	if _, err := AddToTensor(m, "nothing", delta); err == nil {
		t.Error("a tensor no node computes: no error")
	}
}

// TestAddToTensorFoldsIntoCentering: when the features' one reader subtracts a constant mean (the
// head's centering), the correction goes into that constant: no node is added, and onnxruntime
// computes relu(x) + delta - mean; the original model keeps its mean.
func TestAddToTensorFoldsIntoCentering(t *testing.T) {
	ortLib(t)
	f := backbone.OutputName
	mean := []float32{0.25, 0.5, -1}
	m := &onnx.ModelProto{IrVersion: 7, OpsetImport: []*onnx.OperatorSetIdProto{{Domain: "", Version: 13}}, Graph: &onnx.GraphProto{
		Name:        "centered",
		Input:       []*onnx.ValueInfoProto{onnxpb.ValueInfo("x", onnxpb.Float, "N", 3)},
		Output:      []*onnx.ValueInfoProto{onnxpb.ValueInfo("y", onnxpb.Float, "N", 3)},
		Initializer: []*onnx.TensorProto{onnxpb.FloatTensor("mean", []int64{3}, mean)},
		Node: []*onnx.NodeProto{
			onnxpb.Node("Relu", "relu", []string{"x"}, []string{f}),
			onnxpb.Node("Sub", "center", []string{f, "mean"}, []string{"y"}),
		},
	}}
	delta := []float32{0.5, -1, 0.25}
	c, err := AddToTensor(m, f, delta)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Graph.Node) != 2 || c.Graph.Node[0].Output[0] != f {
		t.Fatalf("nodes %v: want the same two, relu still writing %q", c.Graph.Node, f)
	}
	if v, _ := onnxpb.Floats(onnxpb.Initializers(m.Graph)["mean"]); v[0] != mean[0] || len(m.Graph.Initializer) != 1 {
		t.Fatalf("the original model changed: mean %v", v)
	}
	sess, err := ort.NewSession(mustMarshal(t, c), ort.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	x := []float32{-1, 2, 0.5, 3, -2, -0.25}
	y := make([]float32, len(x))
	if err := sess.Run(x, 2, y); err != nil {
		t.Fatal(err)
	}
	for i, v := range x {
		want := float32(math.Max(float64(v), 0)) + delta[i%3] - mean[i%3]
		if math.Abs(float64(y[i]-want)) > 1e-6 {
			t.Fatalf("x %v: y %v, want relu(x) + %v - %v", x, y, delta, mean)
		}
	}
}
