package graph

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/internal/onnxpb"
)

// chainModel is a small inverted-residual block + head: x [N,4,4,4] -> y [N,3].
func chainModel(t *testing.T) *onnx.ModelProto {
	t.Helper()
	for _, c := range gradCases() {
		if strings.HasPrefix(c.name, "chain ") {
			return testModel(c.opset, c.inputs, c.inits(newRand(1)), c.nodes...)
		}
	}
	t.Fatal("no chain case")
	return nil
}

func TestDecodeErrors(t *testing.T) {
	chain := func(t *testing.T) *onnx.ModelProto { return chainModel(t) }
	withOp := func(op string) func(t *testing.T) *onnx.ModelProto {
		return func(t *testing.T) *onnx.ModelProto {
			m := chainModel(t)
			for _, n := range m.Graph.Node {
				if n.Name == "relu" {
					n.OpType = op
				}
			}
			return m
		}
	}
	for _, c := range []struct {
		name        string
		model       func(t *testing.T) *onnx.ModelProto
		opts        Options
		unsupported bool
		want        []string
	}{
		// x stays live until the residual Add, so the first single-tensor cut is its output s.
		{"unsupported op suggests a later cut", withOp("Sigmoid"), Options{From: []string{"x"}, To: "y"}, true,
			[]string{`backbone/graph: op "Sigmoid" (node "relu") is not supported for training; cut later, e.g. at "s"`}},
		{"unsupported op producing To", withOp("Sigmoid"), Options{From: []string{"x"}, To: "dr"}, true,
			[]string{`op "Sigmoid" (node "relu") is not supported`, "no later single-tensor cut point before To"}},
		{"other domain", func(t *testing.T) *onnx.ModelProto {
			m := chainModel(t)
			m.Graph.Node[3].Domain = "com.microsoft"
			return m
		}, Options{From: []string{"x"}, To: "y"}, true, []string{`op "com.microsoft.Relu"`}},
		{"residual input makes a block-internal cut need two tensors", chain, Options{From: []string{"d"}, To: "y"}, false,
			[]string{`tensor "x" (read by node "residual") is not computed from From ["d"]`}},
		{"unknown To", chain, Options{From: []string{"x"}, To: "nope"}, false, []string{`To "nope" is not a tensor of the graph`}},
		{"From not used", chain, Options{From: []string{"x", "e"}, To: "e"}, false, []string{`From "x" is not used to compute To "e"`}},
		{"From is an initializer", chain, Options{From: []string{"W1"}, To: "y"}, false, []string{`From "W1" is an initializer`}},
		{"shape unknown", chain, Options{From: []string{"e6"}, To: "p"}, false, []string{`shape of From "e6" is not declared`, "Options.InputShapes"}},
		{"InputShapes count", chain, Options{From: []string{"x"}, To: "y", InputShapes: [][]int{{1}, {2}}}, false, []string{"2 shapes for 1 From"}},
		{"no From", chain, Options{To: "y"}, false, []string{"Options.From and Options.To must be set"}},
		{"Reshape with a computed shape", func(t *testing.T) *onnx.ModelProto {
			return testModel(13, map[string][]int{"x": {2, 3}}, nil,
				onnxpb.Node("Shape", "shape", []string{"x"}, []string{"s"}),
				onnxpb.Node("Reshape", "reshape", []string{"x", "s"}, []string{"r"}),
				onnxpb.Node("Relu", "relu", []string{"r"}, []string{"y"}))
		}, Options{From: []string{"x"}, To: "y"}, true,
			[]string{`op "Reshape" (node "reshape"): shape input must be a constant`, `cut later, e.g. at "r"`}},
		{"missing required input", func(t *testing.T) *onnx.ModelProto {
			return testModel(13, map[string][]int{"x": {2, 3}}, nil, onnxpb.Node("Add", "add", []string{"x"}, []string{"y"}))
		}, Options{From: []string{"x"}, To: "y"}, false, []string{`op "Add" (node "add"): 1 inputs and 1 outputs: want 2 to 2 inputs`}},
		{"int8 From", func(t *testing.T) *onnx.ModelProto {
			m := testModel(13, map[string][]int{"x": {2, 3}}, nil, onnxpb.Node("Relu", "relu", []string{"x"}, []string{"y"}))
			m.Graph.Input[0].Type.GetTensorType().ElemType = onnxpb.Int8
			return m
		}, Options{From: []string{"x"}, To: "y"}, true, []string{`From "x" has element type int8`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.model(t), c.opts)
			if err == nil {
				t.Fatal("Decode succeeded")
			}
			if errors.Is(err, ErrUnsupported) != c.unsupported {
				t.Errorf("errors.Is(err, ErrUnsupported) = %v, want %v", !c.unsupported, c.unsupported)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestInferErrors(t *testing.T) {
	g, err := Decode(chainModel(t), Options{From: []string{"x"}, To: "y", Trainable: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Infer([][]float32{make([]float32, 10)}, 2); err == nil || !strings.Contains(err.Error(), `input "x" has 10 values, want 128 (shape [2 4 4 4])`) {
		t.Errorf("short input: %v", err)
	}
	if _, err := g.Infer(nil, 2); err == nil || !strings.Contains(err.Error(), "got 0 inputs, want 1") {
		t.Errorf("no inputs: %v", err)
	}
	if _, err := g.Infer([][]float32{make([]float32, 128)}, 2); err != nil {
		t.Fatal(err)
	}
	// A Param whose Value was replaced by a slice of the wrong length.
	g.Params()[0].Value = g.Params()[0].Value[:3]
	if _, err := g.Infer([][]float32{make([]float32, 128)}, 2); err == nil || !strings.Contains(err.Error(), `Param "W1" has 3 values`) {
		t.Errorf("bad Param: %v", err)
	}
	// A run-time shape error names the node and op.
	m := testModel(13, map[string][]int{"x": {2, 3}}, []*onnx.TensorProto{randTensor(newRand(1), "b", 1, 4)},
		onnxpb.Node("Add", "add", []string{"x", "b"}, []string{"y"}))
	g, err = Decode(m, Options{From: []string{"x"}, To: "y"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.Infer([][]float32{make([]float32, 6)}, 2)
	var ne *NodeError
	if !errors.As(err, &ne) || ne.Node != "add" || ne.Op != "Add" || !strings.Contains(err.Error(), "[2 3] and [4] are not broadcastable") {
		t.Errorf("broadcast error: %v", err)
	}
}

// TestParamsAndBatch checks that Params follow the model's initializers, that Value updates
// are used by the next Infer, that the batch size may change between calls, and that without
// Trainable there are no Params but input gradients still flow.
func TestParamsAndBatch(t *testing.T) {
	m := chainModel(t)
	g, err := Decode(m, Options{From: []string{"x"}, To: "y", Trainable: true})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range g.Params() {
		names = append(names, p.Name)
	}
	if strings.Join(names, " ") != "W1 W2 W3 B3 G" {
		t.Fatalf("Params %v", names)
	}
	if s := g.InputShapes(); len(s) != 1 || len(s[0]) != 3 || s[0][0] != 4 {
		t.Fatalf("InputShapes %v", s)
	}
	x := make([]float32, 3*64)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)))
	}
	y1, err := g.Infer([][]float32{x}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := g.OutputShape(); err != nil || len(s) != 1 || s[0] != 3 || len(y1) != 9 {
		t.Fatalf("OutputShape %v, %v; %d values at batch 3", s, err, len(y1))
	}
	// y = f·Gᵀ (no bias): doubling G doubles y.
	G := g.Params()[4]
	for i := range G.Value {
		G.Value[i] *= 2
	}
	y2, err := g.Infer([][]float32{x}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range y1 {
		if math.Abs(float64(y2[i]-2*y1[i])) > 1e-5*(1+math.Abs(float64(y1[i]))) {
			t.Fatalf("y[%d] = %g after doubling G, want %g", i, y2[i], 2*y1[i])
		}
	}
	// Batch 1 gives the first sample's row.
	y3, err := g.Infer([][]float32{x[:64]}, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range y3 {
		if math.Abs(float64(y3[i]-y2[i])) > 1e-6 {
			t.Fatalf("batch 1: y[%d] = %g, want %g", i, y3[i], y2[i])
		}
	}
	frozen, err := Decode(m, Options{From: []string{"x"}, To: "y"})
	if err != nil {
		t.Fatal(err)
	}
	if len(frozen.Params()) != 0 {
		t.Fatalf("Trainable false: %d Params", len(frozen.Params()))
	}
	st, err := newStepper[float32](frozen, 3)
	if err != nil {
		t.Fatal(err)
	}
	_, gx, err := st.step([][]float32{x}, []float32{1, 0, 0, 0, 0, 0, 0, 0, 0})
	if err != nil {
		t.Fatal(err)
	}
	nonzero := 0
	for _, v := range gx[0] {
		if v != 0 {
			nonzero++
		}
	}
	if len(gx[0]) != len(x) || nonzero == 0 {
		t.Fatalf("input gradient: %d values, %d non-zero", len(gx[0]), nonzero)
	}
}

// TestBatchNormFolding compares Conv+BatchNormalization folded at decode time with the same
// model where an Identity between them prevents folding (frozen-statistics BN op).
func TestBatchNormFolding(t *testing.T) {
	for _, c := range gradCases() {
		if c.folded == 0 {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			inits := c.inits(newRand(5))
			folded := testModel(c.opset, c.inputs, inits, c.nodes...)
			var nodes []*onnx.NodeProto
			for _, n := range c.nodes {
				n = onnxpb.Node(n.OpType, n.Name, n.Input, n.Output, n.Attribute...)
				if n.OpType == "Conv" {
					n.Output = []string{"c0"}
					nodes = append(nodes, n, onnxpb.Node("Identity", "keep", []string{"c0"}, []string{"c"}))
					continue
				}
				nodes = append(nodes, n)
			}
			plain := testModel(c.opset, c.inputs, inits, nodes...)
			var outs [2][]float32
			for i, m := range []*onnx.ModelProto{folded, plain} {
				g, err := Decode(m, Options{From: []string{"x"}, To: "y", Trainable: true})
				if err != nil {
					t.Fatal(err)
				}
				if want := 1 - i; len(g.Folded()) != want {
					t.Fatalf("model %d: folded %v, want %d", i, g.Folded(), want)
				}
				x := make([]float32, numel(c.inputs["x"]))
				for j := range x {
					x[j] = float32(math.Cos(float64(j)))
				}
				if outs[i], err = g.Infer([][]float32{x}, c.inputs["x"][0]); err != nil {
					t.Fatal(err)
				}
			}
			for j := range outs[0] {
				if d := math.Abs(float64(outs[0][j] - outs[1][j])); d > 1e-5*(1+math.Abs(float64(outs[1][j]))) {
					t.Fatalf("y[%d]: folded %g, unfolded %g", j, outs[0][j], outs[1][j])
				}
			}
		})
	}
}

func TestTailCutPointsSynthetic(t *testing.T) {
	if got := TailCutPoints(chainModel(t)); len(got) != 1 || got[0] != "x" {
		t.Fatalf("TailCutPoints = %v, want [x]", got)
	}
	m := testModel(13, map[string][]int{"x": {2, 3}}, nil, onnxpb.Node("Relu", "relu", []string{"x"}, []string{"y"}))
	if got := TailCutPoints(m); got != nil {
		t.Fatalf("TailCutPoints without blocks = %v", got)
	}
}
