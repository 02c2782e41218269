package graph

import (
	"errors"
	"fmt"
	"math"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

// Options selects the subgraph Decode turns into a Graph.
type Options struct {
	// From names the activations the subgraph starts from (cut points): Forward receives one
	// float32 slice per name, in this order. Each has a leading batch axis.
	From []string
	// To names the output tensor, e.g. "464_quantized" (pooled features of MobileNetV2).
	To string
	// Trainable makes the float initializers read as data (Conv/Gemm/MatMul weights and
	// biases, Add/Sub/Mul/Concat constant operands, BatchNormalization scale and bias when not
	// folded) Params with gradients. Without it the graph has no Params; Backward still
	// returns the gradients of the inputs.
	Trainable bool
	// InputShapes gives the per-sample shape (without the batch axis) of each From tensor, e.g.
	// [160 7 7]. A nil entry, or a nil slice, means the shape declared in the model (graph
	// input, value_info or output), which must then be fixed apart from the batch axis.
	InputShapes [][]int
}

// Param is one trainable tensor, with the layout of the ONNX initializer it comes from (Conv
// weights [M, C/group, kH, kW], biases [M], Gemm B as stored). Value and Grad are row-major
// float64 slices of len prod(Shape). Forward converts Value to float32 on every call, so the
// caller (optimizer, checkpoint) may update it in place between calls; Backward overwrites Grad.
type Param struct {
	Name        string
	Shape       []int
	Value, Grad []float64
}

// Graph is a decoded float subgraph that runs forward and backward in Go, in float32. It keeps
// the activations of the last Forward for Backward and is not safe for concurrent use.
type Graph struct {
	p   *plan
	eng *engine[float32]
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
	eng, err := build[float32](p)
	if err != nil {
		return nil, err
	}
	return &Graph{p: p, eng: eng}, nil
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

// Folded lists the BatchNormalizations folded into Convs, as "conv node <- bn node".
func (g *Graph) Folded() []string { return append([]string(nil), g.p.folded...) }

// Forward computes To for a batch: inputs[i] holds batch × prod(InputShapes()[i]) float32
// values of From[i] (row-major, batch first). It returns the output (row-major, its shape
// given by OutputShape) and keeps what Backward needs.
func (g *Graph) Forward(inputs [][]float32, batch int) ([]float32, error) {
	y, err := g.eng.forward(inputs, batch)
	if err != nil {
		return nil, err
	}
	return append([]float32(nil), y.data...), nil
}

// OutputShape returns the full shape of the last Forward's output (nil before Forward).
func (g *Graph) OutputShape() []int {
	if g.eng.cur == nil {
		return nil
	}
	return append([]int(nil), g.eng.cur[g.p.out].shape...)
}

// Backward takes the gradient of the loss with respect to the last Forward's output (same
// length) and returns the gradients with respect to each From input; it overwrites the Grad of
// every Param.
func (g *Graph) Backward(gradOut []float32) ([][]float32, error) {
	gi, err := g.eng.backward(gradOut)
	if err != nil {
		return nil, err
	}
	r := make([][]float32, len(gi))
	for i, t := range gi {
		r[i] = t.data
	}
	return r, nil
}

// ---- engine ----

type enode[T float] struct {
	*pnode
	k kernel[T]
}

type engine[T float] struct {
	p        *plan
	consts   []*tensor[T] // by value id: constants (converted once) and parameters (per Forward)
	nodes    []enode[T]
	needGrad []bool
	cur      []*tensor[T] // values of the last Forward
	arena    arena[T]
}

func build[T float](p *plan) (*engine[T], error) {
	e := &engine[T]{p: p, consts: make([]*tensor[T], len(p.vals)), needGrad: make([]bool, len(p.vals))}
	for id, v := range p.vals {
		switch v.kind {
		case valConst:
			t := newTensor[T](v.shape)
			for i, x := range v.data {
				t.data[i] = T(x)
			}
			e.consts[id] = t
		case valParam:
			e.consts[id] = newTensor[T](v.shape)
			e.needGrad[id] = true
		case valInput:
			e.needGrad[id] = true
		}
	}
	for _, n := range p.nodes {
		k, err := newKernel[T](n)
		if err != nil {
			return nil, &NodeError{Node: n.name, Op: n.op, Err: err}
		}
		e.nodes = append(e.nodes, enode[T]{n, k})
		for _, in := range n.in {
			if in >= 0 && e.needGrad[in] {
				e.needGrad[n.out] = true
			}
		}
	}
	return e, nil
}

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

// errNoForward is returned by Backward before any successful Forward.
var errNoForward = errors.New("backbone/graph: Backward called before a successful Forward")

// release gives the buffers of the last Forward's inputs and node outputs back to the arena.
func (e *engine[T]) release() {
	for id, t := range e.cur {
		if k := e.p.vals[id].kind; t != nil && (k == valNode || k == valInput) {
			e.arena.put(t)
		}
	}
	e.cur = nil
}

// forward runs the graph; the returned tensor belongs to the engine until the next forward.
func (e *engine[T]) forward(inputs [][]T, batch int) (*tensor[T], error) {
	p := e.p
	e.release()
	if len(inputs) != len(p.inputs) {
		return nil, errorf("Forward got %d inputs, want %d (%v)", len(inputs), len(p.inputs), e.fromNames())
	}
	if batch < 0 {
		return nil, errorf("Forward: negative batch %d", batch)
	}
	cur := make([]*tensor[T], len(p.vals))
	for i, id := range p.inputs {
		shape := append([]int{batch}, p.inShapes[i]...)
		if len(inputs[i]) != numel(shape) {
			return nil, errorf("Forward: input %q has %d values, want %d (shape %s)", p.vals[id].name, len(inputs[i]), numel(shape), shapeString(shape))
		}
		cur[id] = e.arena.tensor(shape)
		copy(cur[id].data, inputs[i])
	}
	for id, v := range p.vals {
		if v.kind == valParam {
			t := e.consts[id]
			if len(v.param.Value) != len(t.data) {
				return nil, errorf("Param %q has %d values, want %d", v.param.Name, len(v.param.Value), len(t.data))
			}
			for i, x := range v.param.Value {
				t.data[i] = T(x)
			}
		}
		if e.consts[id] != nil {
			cur[id] = e.consts[id]
		}
	}
	for _, n := range e.nodes {
		ins := make([]*tensor[T], len(n.in))
		for i, id := range n.in {
			if id >= 0 {
				ins[i] = cur[id]
			}
		}
		y, err := n.k.forward(&e.arena, ins)
		if err != nil {
			return nil, &NodeError{Node: n.name, Op: n.op, Err: fmt.Errorf("forward with inputs %s: %w", shapesOfNonNil(ins), err)}
		}
		cur[n.out] = y
	}
	e.cur = cur
	if cur[p.out] == nil {
		return nil, errorf("To %q was not computed", p.vals[p.out].name)
	}
	return cur[p.out], nil
}

func shapesOfNonNil[T float](ts []*tensor[T]) string {
	var s [][]int
	for _, t := range ts {
		if t != nil {
			s = append(s, t.shape)
		}
	}
	return joinShapes(s)
}

func (e *engine[T]) fromNames() []string {
	var r []string
	for _, id := range e.p.inputs {
		r = append(r, e.p.vals[id].name)
	}
	return r
}

func (e *engine[T]) backward(gradOut []T) ([]*tensor[T], error) {
	p := e.p
	if e.cur == nil {
		return nil, errNoForward
	}
	out := e.cur[p.out]
	if len(gradOut) != len(out.data) {
		return nil, errorf("Backward: gradient has %d values, want %d (output shape %s)", len(gradOut), len(out.data), shapeString(out.shape))
	}
	grads := make([]*tensor[T], len(p.vals))
	grads[p.out] = e.arena.tensor(out.shape)
	copy(grads[p.out].data, gradOut)
	gradOf := func(id int) *tensor[T] {
		if grads[id] == nil {
			grads[id] = e.arena.tensor(e.cur[id].shape)
		}
		return grads[id]
	}
	for i := len(e.nodes) - 1; i >= 0; i-- {
		n := e.nodes[i]
		g := grads[n.out]
		if g == nil || !e.needGrad[n.out] {
			continue
		}
		ins := make([]*tensor[T], len(n.in))
		gin := make([]*tensor[T], len(n.in))
		for j, id := range n.in {
			if id < 0 {
				continue
			}
			ins[j] = e.cur[id]
			if e.needGrad[id] {
				gin[j] = gradOf(id)
			}
		}
		if err := n.k.backward(&e.arena, ins, e.cur[n.out], g, gin); err != nil {
			for _, t := range grads {
				e.arena.put(t)
			}
			return nil, &NodeError{Node: n.name, Op: n.op, Err: fmt.Errorf("backward: %w", err)}
		}
		e.arena.put(g) // free as we go
		grads[n.out] = nil
	}
	// The input gradients are returned (not recycled); parameter gradients are converted.
	res := make([]*tensor[T], len(p.inputs))
	for i, id := range p.inputs {
		res[i] = gradOf(id)
		grads[id] = nil
	}
	for id, v := range p.vals {
		if v.kind != valParam {
			continue
		}
		g := gradOf(id)
		for j, x := range g.data {
			v.param.Grad[j] = float64(x)
		}
	}
	for _, t := range grads {
		e.arena.put(t)
	}
	return res, nil
}
