package graph

import (
	"math"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

// Options selects the subgraph Decode turns into a Graph.
type Options struct {
	// From names the activations the subgraph starts from (cut points): AddTo takes one node
	// and Infer one float32 slice per name, in this order. Each has a leading batch axis.
	From []string
	// To names the output tensor, e.g. "464_quantized" (pooled features of MobileNetV2).
	To string
	// Trainable makes the float initializers read as data (Conv/Gemm/MatMul weights and
	// biases, Add/Sub/Mul/Concat constant operands, BatchNormalization scale and bias when not
	// folded) Params with gradients. Without it the graph has no Params; gradients still
	// flow to the inputs.
	Trainable bool
	// InputShapes gives the per-sample shape (without the batch axis) of each From tensor, e.g.
	// [160 7 7]. A nil entry, or a nil slice, means the shape declared in the model (graph
	// input, value_info or output), which must then be fixed apart from the batch axis.
	InputShapes [][]int
}

// Param is one trainable tensor, with the layout of the ONNX initializer it comes from (Conv
// weights [M, C/group, kH, kW], biases [M], Gemm B as stored). Value and Grad are row-major
// float64 slices of len prod(Shape). LoadParams (and Infer) convert Value to the graph's dtype on
// every run, so the caller (optimizer, checkpoint) may update it in place between runs; the
// training step writes Grad.
type Param struct {
	Name        string
	Shape       []int
	Value, Grad []float64
}

// Graph is a decoded float subgraph. AddTo puts it into a gorgonia expression graph (for
// training, with one gradient pass through it and whatever reads its output); Infer runs it
// forward in float32. A Graph is not safe for concurrent use.
type Graph struct {
	p    *plan
	runs map[int]*inferRun // Infer's compiled graphs by batch size
}

// Decode extracts the nodes that compute opts.To from opts.From and the model's initializers
// and Constant nodes, and prepares them for training. BatchNormalization nodes that directly
// follow a Conv (whose output and weights nothing else reads) are folded into that Conv at
// decode time: its weight becomes W·s and its bias (B − mean)·s + β, s = γ/sqrt(var + ε), under
// the Conv's weight and bias names (BN's bias name when the Conv had none), so training moves
// the folded values. Other BatchNormalizations keep frozen statistics with γ, β trainable.
//
// Errors: a node of an unsupported op, or with unsupported attributes, gives a *NodeError
// wrapping ErrUnsupported that names the op and node and suggests a later cut point; From
// tensors must be float activations with known per-sample shapes (see Options.InputShapes).
func Decode(m *onnx.ModelProto, opts Options) (*Graph, error) {
	p, err := decodePlan(m, opts)
	if err != nil {
		return nil, err
	}
	for _, n := range p.nodes {
		if _, err := newKernel[float32](n); err != nil {
			return nil, &NodeError{Node: n.name, Op: n.op, Err: err}
		}
	}
	return &Graph{p: p, runs: map[int]*inferRun{}}, nil
}

// Params returns the trainable parameters in the order the graph first reads them (a bias
// created by folding a BatchNormalization into a Conv without one comes last); nil when not
// Trainable. The slice and Params are owned by the Graph; callers update Value in place.
func (g *Graph) Params() []*Param { return g.p.params }

// InputShapes returns the per-sample shape of each From tensor.
func (g *Graph) InputShapes() [][]int {
	r := make([][]int, len(g.p.inShapes))
	for i, s := range g.p.inShapes {
		r[i] = append([]int(nil), s...)
	}
	return r
}

// OutputShape returns the per-sample shape of To (without the batch axis), found by shape
// inference at batch size 1.
func (g *Graph) OutputShape() ([]int, error) {
	shapes, err := inferShapes[float32](g.p, 1)
	if err != nil {
		return nil, err
	}
	s := shapes[g.p.out]
	if len(s) == 0 || s[0] != 1 {
		return nil, errorf("To %q has shape %s at batch 1: no leading batch axis", g.p.vals[g.p.out].name, shapeString(s))
	}
	return append([]int(nil), s[1:]...), nil
}

// Folded lists the BatchNormalizations folded into Convs, as "conv node <- bn node".
func (g *Graph) Folded() []string { return append([]string(nil), g.p.folded...) }

func newKernel[T float](n *pnode) (kernel[T], error) {
	switch n.op {
	case "Conv":
		a := n.attrs.(*convAttrs)
		return &convK[T]{window: a.window, group: a.group}, nil
	case "MaxPool", "AveragePool":
		a := n.attrs.(*poolAttrs)
		return &poolK[T]{window: a.window, isMax: a.isMax, includePad: a.includePad}, nil
	case "GlobalAveragePool":
		return gapK[T]{}, nil
	case "Gemm":
		a := n.attrs.(*gemmAttrs)
		return &gemmK[T]{alpha: a.alpha, beta: a.beta, transA: a.transA, transB: a.transB}, nil
	case "MatMul":
		return matmulK[T]{}, nil
	case "Add":
		return &binaryK[T]{kind: binAdd}, nil
	case "Sub":
		return &binaryK[T]{kind: binSub}, nil
	case "Mul":
		return &binaryK[T]{kind: binMul}, nil
	case "Relu":
		return reluK[T]{}, nil
	case "Clip":
		a := n.attrs.(*clipAttrs)
		return &clipK[T]{lo: a.lo, hi: a.hi}, nil
	case "Identity", "Dropout":
		return identityK[T]{}, nil
	case "BatchNormalization":
		a := n.attrs.(*bnAttrs)
		inv := make([]float64, len(a.variance))
		for i, v := range a.variance {
			inv[i] = 1 / math.Sqrt(v+a.eps)
		}
		return &bnK[T]{mean: a.mean, invStd: inv}, nil
	case "Flatten", "Reshape":
		a := n.attrs.(*reshapeAttrs)
		return &reshapeK[T]{flatten: a.flatten, flatAxis: a.axis, target: a.target, allowZero: a.allowZero}, nil
	case "Concat":
		return &concatK[T]{axis: n.attrs.(*concatAttrs).axis}, nil
	case "Softmax":
		a := n.attrs.(*softmaxAttrs)
		return &softmaxK[T]{axis: a.axis, legacy: a.legacy}, nil
	case "LpNormalization":
		a := n.attrs.(*lpAttrs)
		return &lpNormK[T]{axis: a.axis, p: a.p}, nil
	}
	return nil, ErrUnsupported
}
