package graph

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/internal/onnxpb"
)

type gradCase struct {
	name   string
	opset  int64
	inputs map[string][]int // From tensors (sorted by name), dims[0] = batch
	inits  func(r *rand.Rand) []*onnx.TensorProto
	nodes  []*onnx.NodeProto
	folded int      // BatchNormalizations expected to be folded
	params []string // expected parameter names (nil: none)
}

func node(op string, in []string, attrs ...*onnx.AttributeProto) *onnx.NodeProto {
	return onnxpb.Node(op, op, in, []string{"y"}, attrs...)
}

func ints(name string, v ...int64) *onnx.AttributeProto { return onnxpb.AttrInts(name, v...) }

func gradCases() []gradCase {
	x4 := map[string][]int{"x": {2, 3, 5, 6}}
	noInits := func(*rand.Rand) []*onnx.TensorProto { return nil }
	w := func(name string, dims ...int64) func(r *rand.Rand) []*onnx.TensorProto {
		return func(r *rand.Rand) []*onnx.TensorProto { return []*onnx.TensorProto{randTensor(r, name, 0.5, dims...)} }
	}
	many := func(fs ...func(r *rand.Rand) []*onnx.TensorProto) func(r *rand.Rand) []*onnx.TensorProto {
		return func(r *rand.Rand) []*onnx.TensorProto {
			var all []*onnx.TensorProto
			for _, f := range fs {
				all = append(all, f(r)...)
			}
			return all
		}
	}
	bnInits := func(c int64) func(r *rand.Rand) []*onnx.TensorProto {
		return func(r *rand.Rand) []*onnx.TensorProto {
			v := randTensor(r, "var", 1, c)
			for i := range v.FloatData {
				v.FloatData[i] = float32(math.Abs(float64(v.FloatData[i])) + 0.5)
			}
			return []*onnx.TensorProto{randTensor(r, "gamma", 1, c), randTensor(r, "beta", 1, c), randTensor(r, "mean", 1, c), v}
		}
	}
	return []gradCase{
		{name: "Conv dense stride 2 asym pads dilation 2", params: []string{"W", "B"}, opset: 13, inputs: map[string][]int{"x": {2, 3, 7, 8}},
			inits: many(w("W", 4, 3, 3, 2), w("B", 4)),
			nodes: []*onnx.NodeProto{node("Conv", []string{"x", "W", "B"}, ints("strides", 2, 1), ints("pads", 1, 0, 2, 1), ints("dilations", 2, 1))}},
		{name: "Conv group 3 auto_pad SAME_UPPER", params: []string{"W", "B"}, opset: 13, inputs: map[string][]int{"x": {2, 6, 5, 5}},
			inits: many(w("W", 9, 2, 3, 3), w("B", 9)),
			nodes: []*onnx.NodeProto{node("Conv", []string{"x", "W", "B"}, onnxpb.AttrInt("group", 3), ints("strides", 2, 2), onnxpb.AttrString("auto_pad", "SAME_UPPER"))}},
		{name: "Conv depthwise 3x3 pad 1", params: []string{"W", "B"}, opset: 13, inputs: map[string][]int{"x": {2, 4, 5, 5}},
			inits: many(w("W", 4, 1, 3, 3), w("B", 4)),
			nodes: []*onnx.NodeProto{node("Conv", []string{"x", "W", "B"}, onnxpb.AttrInt("group", 4), ints("pads", 1, 1, 1, 1))}},
		{name: "Conv depthwise multiplier 2 stride 2", params: []string{"W"}, opset: 13, inputs: map[string][]int{"x": {2, 3, 6, 7}},
			inits: w("W", 6, 1, 3, 3),
			nodes: []*onnx.NodeProto{node("Conv", []string{"x", "W"}, onnxpb.AttrInt("group", 3), ints("strides", 2, 2), ints("pads", 1, 0, 1, 2))}},
		{name: "Conv 1x1 (batched matmul path)", params: []string{"W", "B"}, opset: 13, inputs: map[string][]int{"x": {3, 5, 4, 3}},
			inits: many(w("W", 7, 5, 1, 1), w("B", 7)),
			nodes: []*onnx.NodeProto{node("Conv", []string{"x", "W", "B"})}},
		{name: "Conv 1x1 group 2", params: []string{"W"}, opset: 13, inputs: map[string][]int{"x": {2, 4, 3, 3}},
			inits: w("W", 6, 2, 1, 1),
			nodes: []*onnx.NodeProto{node("Conv", []string{"x", "W"}, onnxpb.AttrInt("group", 2))}},
		{name: "Conv 1-D", params: []string{"W", "B"}, opset: 13, inputs: map[string][]int{"x": {2, 3, 9}},
			inits: many(w("W", 2, 3, 3), w("B", 2)),
			nodes: []*onnx.NodeProto{node("Conv", []string{"x", "W", "B"}, ints("pads", 1, 2), ints("strides", 2))}},
		{name: "Conv + BatchNormalization folded", params: []string{"W", "B"}, opset: 13, inputs: map[string][]int{"x": {2, 3, 4, 4}}, folded: 1,
			inits: many(w("W", 4, 3, 3, 3), w("B", 4), bnInits(4)),
			nodes: []*onnx.NodeProto{
				onnxpb.Node("Conv", "conv", []string{"x", "W", "B"}, []string{"c"}, ints("pads", 1, 1, 1, 1)),
				onnxpb.Node("BatchNormalization", "bn", []string{"c", "gamma", "beta", "mean", "var"}, []string{"y"}, onnxpb.AttrFloat("epsilon", 1e-3))}},
		{name: "depthwise Conv without bias + BatchNormalization folded", params: []string{"W", "beta"}, opset: 13, inputs: map[string][]int{"x": {2, 4, 4, 4}}, folded: 1,
			inits: many(w("W", 4, 1, 3, 3), bnInits(4)),
			nodes: []*onnx.NodeProto{
				onnxpb.Node("Conv", "conv", []string{"x", "W"}, []string{"c"}, onnxpb.AttrInt("group", 4), ints("pads", 1, 1, 1, 1)),
				onnxpb.Node("BatchNormalization", "bn", []string{"c", "gamma", "beta", "mean", "var"}, []string{"y"})}},
		{name: "BatchNormalization frozen statistics", params: []string{"gamma", "beta"}, opset: 15, inputs: x4, inits: bnInits(3),
			nodes: []*onnx.NodeProto{node("BatchNormalization", []string{"x", "gamma", "beta", "mean", "var"})}},
		{name: "Gemm transA transB alpha beta C row", params: []string{"B", "C"}, opset: 13, inputs: map[string][]int{"x": {4, 3}},
			inits: many(w("B", 5, 4), w("C", 1, 5)),
			nodes: []*onnx.NodeProto{node("Gemm", []string{"x", "B", "C"}, onnxpb.AttrInt("transA", 1), onnxpb.AttrInt("transB", 1), onnxpb.AttrFloat("alpha", 0.7), onnxpb.AttrFloat("beta", 1.3))}},
		{name: "Gemm plain C vector", params: []string{"B", "C"}, opset: 13, inputs: map[string][]int{"x": {4, 3}},
			inits: many(w("B", 3, 5), w("C", 5)),
			nodes: []*onnx.NodeProto{node("Gemm", []string{"x", "B", "C"})}},
		{name: "MatMul 2-D", params: []string{"B"}, opset: 13, inputs: map[string][]int{"x": {4, 6}}, inits: w("B", 6, 3),
			nodes: []*onnx.NodeProto{node("MatMul", []string{"x", "B"})}},
		{name: "MatMul batched, broadcast B", params: []string{"B"}, opset: 13, inputs: map[string][]int{"x": {2, 3, 2, 4}}, inits: w("B", 3, 4, 5),
			nodes: []*onnx.NodeProto{node("MatMul", []string{"x", "B"})}},
		{name: "MatMul 1-D B", params: []string{"B"}, opset: 13, inputs: map[string][]int{"x": {3, 4}}, inits: w("B", 4),
			nodes: []*onnx.NodeProto{node("MatMul", []string{"x", "B"})}},
		{name: "Add per-channel constant", params: []string{"b"}, opset: 13, inputs: x4, inits: w("b", 3, 1, 1),
			nodes: []*onnx.NodeProto{node("Add", []string{"x", "b"})}},
		{name: "Add two inputs", opset: 13, inputs: map[string][]int{"a": {2, 3, 4}, "b": {2, 3, 4}}, inits: noInits,
			nodes: []*onnx.NodeProto{node("Add", []string{"a", "b"})}},
		{name: "Sub constant minus input (broadcast row)", params: []string{"c"}, opset: 13, inputs: map[string][]int{"x": {3, 4}}, inits: w("c", 4),
			nodes: []*onnx.NodeProto{node("Sub", []string{"c", "x"})}},
		{name: "Mul broadcast both ways", params: []string{"s"}, opset: 13, inputs: map[string][]int{"x": {2, 3, 1}}, inits: w("s", 1, 4),
			nodes: []*onnx.NodeProto{node("Mul", []string{"x", "s"})}},
		{name: "Mul two inputs", opset: 13, inputs: map[string][]int{"a": {2, 5}, "b": {2, 5}}, inits: noInits,
			nodes: []*onnx.NodeProto{node("Mul", []string{"a", "b"})}},
		{name: "Relu", opset: 13, inputs: x4, inits: noInits, nodes: []*onnx.NodeProto{node("Relu", []string{"x"})}},
		{name: "Clip min/max inputs", opset: 13, inputs: x4,
			inits: func(*rand.Rand) []*onnx.TensorProto {
				return []*onnx.TensorProto{onnxpb.FloatTensor("lo", nil, []float32{-0.5}), onnxpb.FloatTensor("hi", nil, []float32{0.7})}
			},
			nodes: []*onnx.NodeProto{node("Clip", []string{"x", "lo", "hi"})}},
		{name: "Clip attributes (opset 6)", opset: 6, inputs: x4, inits: noInits,
			nodes: []*onnx.NodeProto{node("Clip", []string{"x"}, onnxpb.AttrFloat("min", 0), onnxpb.AttrFloat("max", 0.6))}},
		{name: "GlobalAveragePool", opset: 13, inputs: x4, inits: noInits, nodes: []*onnx.NodeProto{node("GlobalAveragePool", []string{"x"})}},
		{name: "AveragePool pads exclude pad", opset: 13, inputs: x4, inits: noInits,
			nodes: []*onnx.NodeProto{node("AveragePool", []string{"x"}, ints("kernel_shape", 3, 2), ints("strides", 2, 2), ints("pads", 1, 1, 1, 0))}},
		{name: "AveragePool count_include_pad ceil", opset: 13, inputs: x4, inits: noInits,
			nodes: []*onnx.NodeProto{node("AveragePool", []string{"x"}, ints("kernel_shape", 2, 2), ints("strides", 2, 2), ints("pads", 1, 1, 1, 1), onnxpb.AttrInt("count_include_pad", 1), onnxpb.AttrInt("ceil_mode", 1))}},
		{name: "MaxPool strides pads dilations", opset: 12, inputs: x4, inits: noInits,
			nodes: []*onnx.NodeProto{node("MaxPool", []string{"x"}, ints("kernel_shape", 2, 2), ints("strides", 1, 2), ints("pads", 1, 0, 0, 1), ints("dilations", 2, 1))}},
		{name: "Flatten axis 2", params: []string{"m"}, opset: 13, inputs: x4, inits: w("m", 30), nodes: []*onnx.NodeProto{
			onnxpb.Node("Flatten", "f", []string{"x"}, []string{"f"}, onnxpb.AttrInt("axis", 2)),
			onnxpb.Node("Mul", "m", []string{"f", "m"}, []string{"y"})}},
		{name: "Reshape 0 and -1", params: []string{"m"}, opset: 14, inputs: x4,
			inits: func(r *rand.Rand) []*onnx.TensorProto {
				return []*onnx.TensorProto{onnxpb.Int64Tensor("s", []int64{3}, []int64{0, -1, 5}), randTensor(r, "m", 1, 5)}
			},
			nodes: []*onnx.NodeProto{onnxpb.Node("Reshape", "r", []string{"x", "s"}, []string{"r"}), onnxpb.Node("Mul", "m", []string{"r", "m"}, []string{"y"})}},
		{name: "Concat input, input, constant", params: []string{"c"}, opset: 13, inputs: map[string][]int{"a": {2, 3, 2}, "b": {2, 1, 2}}, inits: w("c", 2, 2, 2),
			nodes: []*onnx.NodeProto{onnxpb.Node("Concat", "cat", []string{"a", "b", "c"}, []string{"k"}, onnxpb.AttrInt("axis", 1)),
				onnxpb.Node("Mul", "m", []string{"k", "k"}, []string{"y"})}},
		{name: "Identity and Dropout", opset: 13, inputs: x4,
			inits: func(*rand.Rand) []*onnx.TensorProto {
				return []*onnx.TensorProto{onnxpb.FloatTensor("ratio", nil, []float32{0.3})}
			},
			nodes: []*onnx.NodeProto{onnxpb.Node("Identity", "i", []string{"x"}, []string{"i"}), onnxpb.Node("Dropout", "d", []string{"i", "ratio"}, []string{"y"})}},
		{name: "Softmax axis 1", opset: 13, inputs: x4, inits: noInits, nodes: []*onnx.NodeProto{node("Softmax", []string{"x"}, onnxpb.AttrInt("axis", 1))}},
		{name: "Softmax legacy (opset 11) axis 2", opset: 11, inputs: x4, inits: noInits, nodes: []*onnx.NodeProto{node("Softmax", []string{"x"}, onnxpb.AttrInt("axis", 2))}},
		{name: "LpNormalization p 2", opset: 13, inputs: x4, inits: noInits, nodes: []*onnx.NodeProto{node("LpNormalization", []string{"x"}, onnxpb.AttrInt("axis", 1))}},
		{name: "LpNormalization p 1", opset: 13, inputs: x4, inits: noInits, nodes: []*onnx.NodeProto{node("LpNormalization", []string{"x"}, onnxpb.AttrInt("p", 1))}},
		{name: "chain Conv Clip depthwise Conv Add GAP Flatten Gemm", params: []string{"W1", "W2", "W3", "B3", "G"}, opset: 13, inputs: map[string][]int{"x": {2, 4, 4, 4}},
			inits: many(w("W1", 8, 4, 1, 1), w("W2", 8, 1, 3, 3), w("W3", 4, 8, 1, 1), w("B3", 4), w("G", 3, 4),
				func(*rand.Rand) []*onnx.TensorProto {
					return []*onnx.TensorProto{onnxpb.FloatTensor("lo", nil, []float32{0}), onnxpb.FloatTensor("hi", nil, []float32{6})}
				}),
			nodes: []*onnx.NodeProto{
				onnxpb.Node("Conv", "expand", []string{"x", "W1"}, []string{"e"}),
				onnxpb.Node("Clip", "relu6", []string{"e", "lo", "hi"}, []string{"e6"}),
				onnxpb.Node("Conv", "dw", []string{"e6", "W2"}, []string{"d"}, onnxpb.AttrInt("group", 8), ints("pads", 1, 1, 1, 1)),
				onnxpb.Node("Relu", "relu", []string{"d"}, []string{"dr"}),
				onnxpb.Node("Conv", "project", []string{"dr", "W3", "B3"}, []string{"p"}),
				onnxpb.Node("Add", "residual", []string{"x", "p"}, []string{"s"}),
				onnxpb.Node("GlobalAveragePool", "gap", []string{"s"}, []string{"g"}),
				onnxpb.Node("Flatten", "flat", []string{"g"}, []string{"f"}),
				onnxpb.Node("Gemm", "fc", []string{"f", "G"}, []string{"y"}, onnxpb.AttrInt("transB", 1))}},
	}
}

// TestGradients checks every op's gradient (float64, through gorgonia's symbolic
// differentiation of the custom Ops) against central finite
// differences of L = Σ r ⊙ y for random r, with respect to every input element and parameter:
// |analytic − numeric| ≤ 1e-6·max(1, |numeric|) with step 1e-5.
func TestGradients(t *testing.T) {
	const step, tol = 1e-5, 1e-6
	for ci, c := range gradCases() {
		t.Run(c.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(ci), 7))
			m := testModel(c.opset, c.inputs, c.inits(r), c.nodes...)
			opts := Options{To: "y", Trainable: true}
			for _, n := range sortedKeys(c.inputs) {
				opts.From = append(opts.From, n)
			}
			p, err := decodePlan(m, opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.folded) != c.folded {
				t.Fatalf("folded %v, want %d BatchNormalization(s) folded", p.folded, c.folded)
			}
			g := &Graph{p: p, runs: map[int]*inferRun{}}
			batch := c.inputs[opts.From[0]][0]
			st, err := newStepper[float64](g, batch)
			if err != nil {
				t.Fatal(err)
			}
			xs := make([][]float64, len(opts.From))
			for i, n := range opts.From {
				xs[i] = randFloats(r, numel(c.inputs[n]), 1)
			}
			y, _, err := st.step(xs, nil)
			if err != nil {
				t.Fatal(err)
			}
			rw := randFloats(r, len(y), 1)
			loss := func() float64 {
				y, _, err := st.step(xs, nil)
				if err != nil {
					t.Fatal(err)
				}
				var s float64
				for i, v := range y {
					s += rw[i] * v
				}
				return s
			}
			_, gin, err := st.step(xs, rw)
			if err != nil {
				t.Fatal(err)
			}
			pgrad := map[*Param][]float64{} // loss() below overwrites Grad
			for _, q := range p.params {
				pgrad[q] = append([]float64(nil), q.Grad...)
			}
			check := func(what string, v []float64, analytic []float64) {
				worst := 0.0
				for j := range v {
					orig := v[j]
					v[j] = orig + step
					lp := loss()
					v[j] = orig - step
					lm := loss()
					v[j] = orig
					num := (lp - lm) / (2 * step)
					d := math.Abs(num - analytic[j])
					worst = math.Max(worst, d)
					if d > tol*math.Max(1, math.Abs(num)) {
						t.Fatalf("%s[%d]: analytic %.9g, numeric %.9g", what, j, analytic[j], num)
					}
				}
				t.Logf("%s: %d values, max |analytic - numeric| = %.2g", what, len(v), worst)
			}
			for i, n := range opts.From {
				check("d/d"+n, xs[i], gin[i])
			}
			var names []string
			for _, q := range p.params {
				names = append(names, q.Name)
			}
			if fmt.Sprint(names) != fmt.Sprint(c.params) {
				t.Fatalf("params %v, want %v", names, c.params)
			}
			for _, q := range p.params {
				check("d/d"+q.Name, q.Value, pgrad[q])
			}
		})
	}
}

// TestPassGrad32 checks the branch-free mask of Clip/Relu backward at and around the bounds,
// for signed zeros and infinite bounds.
func TestPassGrad32(t *testing.T) {
	inf := float32(math.Inf(1))
	negZero := float32(math.Copysign(0, -1))
	for _, c := range []struct {
		lo, hi float32
		x      []float32
		want   []float32
	}{
		{0, 6, []float32{-1, negZero, 0, 1e-30, 3, 6 - 1e-6, 6, 7}, []float32{0, 0, 0, 1, 1, 1, 0, 0}},
		{-1.5, 2, []float32{-1.5, -1.4999999, 1.9999999, 2, 0}, []float32{0, 1, 1, 0, 1}},
		{0, inf, []float32{-3, 0, 1e-40, 5, 1e30}, []float32{0, 0, 1, 1, 1}},
		{-inf, inf, []float32{-1e30, 0, 1e30}, []float32{1, 1, 1}},
	} {
		g := make([]float32, len(c.x))
		dx := make([]float32, len(c.x))
		for i := range g {
			g[i] = 1
		}
		passGrad32(c.x, g, dx, c.lo, c.hi)
		for i := range dx {
			if dx[i] != c.want[i] {
				t.Errorf("lo %g hi %g x %g: gradient %g, want %g", c.lo, c.hi, c.x[i], dx[i], c.want[i])
			}
		}
	}
}
