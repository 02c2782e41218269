package graph

import (
	"errors"
	"fmt"

	gg "gorgonia.org/gorgonia"
	gt "gorgonia.org/tensor"
)

// ParamNode is the leaf of a Param in a gorgonia graph built by AddTo. Its value (a
// *gt.Dense of the graph's dtype, shaped as the Param, [1] for a scalar) must hold the
// Param's Value when the graph runs: see LoadParams.
type ParamNode struct {
	Param *Param
	Node  *gg.Node
}

// LoadParams copies each Param's Value into its node's value, converting to the node's dtype.
func LoadParams(ps []ParamNode) {
	for _, p := range ps {
		if len(p.Param.Value) == 0 {
			continue
		}
		switch d := p.Node.Value().Data().(type) {
		case []float32:
			for i, v := range p.Param.Value {
				d[i] = float32(v)
			}
		case []float64:
			copy(d, p.Param.Value)
		}
	}
}

// AddTo adds the decoded subgraph to eg, reading inputs (one node per From tensor, each
// [batch, InputShapes()[i]...], all of dtype Float32 or all Float64), and returns the node of To
// and the leaves of the Params (named "backbone/" + Param.Name). The nodes' Ops run this
// package's kernels (see gorgonia.go) and are differentiable: gorgonia.Grad through the output
// reaches the Params and inputs. Shapes are fixed by the batch size of inputs; build another
// graph for another batch size.
func (g *Graph) AddTo(eg *gg.ExprGraph, inputs ...*gg.Node) (out *gg.Node, params []ParamNode, err error) {
	defer recoverErr(&err)
	if len(inputs) != len(g.p.inputs) {
		return nil, nil, errorf("AddTo got %d inputs, want %d (%v)", len(inputs), len(g.p.inputs), g.fromNames())
	}
	switch dt := inputs[0].Dtype(); dt {
	case gt.Float32:
		return addNodes[float32](g.p, eg, inputs)
	case gt.Float64:
		return addNodes[float64](g.p, eg, inputs)
	default:
		return nil, nil, errorf("AddTo: inputs of dtype %v, want float32 or float64", dt)
	}
}

func (g *Graph) fromNames() []string {
	var r []string
	for _, id := range g.p.inputs {
		r = append(r, g.p.vals[id].name)
	}
	return r
}

func dtypeOf[T float]() gt.Dtype {
	var z T
	if _, ok := any(z).(float64); ok {
		return gt.Float64
	}
	return gt.Float32
}

// inferShapes returns the shape of every value of p at the given batch size.
func inferShapes[T float](p *plan, batch int) ([][]int, error) {
	shapes := make([][]int, len(p.vals))
	for i, id := range p.inputs {
		shapes[id] = append([]int{batch}, p.inShapes[i]...)
	}
	for id, v := range p.vals {
		if v.kind == valConst || v.kind == valParam {
			shapes[id] = v.shape
		}
	}
	for _, n := range p.nodes {
		k, err := newKernel[T](n)
		if err != nil {
			return nil, &NodeError{Node: n.name, Op: n.op, Err: err}
		}
		ins := make([][]int, len(n.in))
		for i, id := range n.in {
			if id >= 0 {
				ins[i] = shapes[id]
			}
		}
		s, err := outShape(k, ins)
		if err != nil {
			return nil, &NodeError{Node: n.name, Op: n.op, Err: fmt.Errorf("inputs %s: %w", joinShapes(nonNil(ins)), err)}
		}
		shapes[n.out] = s
	}
	return shapes, nil
}

func nonNil(s [][]int) [][]int {
	var r [][]int
	for _, x := range s {
		if x != nil {
			r = append(r, x)
		}
	}
	return r
}

// addNodes builds p into eg in element type T.
func addNodes[T float](p *plan, eg *gg.ExprGraph, inputs []*gg.Node) (*gg.Node, []ParamNode, error) {
	dt := dtypeOf[T]()
	batch := 0
	for i, x := range inputs {
		want := append([]int{-1}, p.inShapes[i]...)
		s := x.Shape()
		if x.Dtype() != dt || len(s) != len(want) {
			return nil, nil, errorf("AddTo: input %q is %v %v, want %v [batch %v]", p.vals[p.inputs[i]].name, x.Dtype(), s, dt, shapeString(p.inShapes[i]))
		}
		if i == 0 {
			batch = s[0]
		}
		want[0] = batch
		if !sameShape(s, want) {
			return nil, nil, errorf("AddTo: input %q has shape %v, want %s", p.vals[p.inputs[i]].name, s, shapeString(want))
		}
	}
	shapes, err := inferShapes[T](p, batch)
	if err != nil {
		return nil, nil, err
	}
	nodes := make([]*gg.Node, len(p.vals))
	consts := make([]*tensor[T], len(p.vals))
	for i, id := range p.inputs {
		nodes[id] = inputs[i]
	}
	var params []ParamNode
	for id, v := range p.vals {
		switch v.kind {
		case valConst:
			t := newTensor[T](v.shape)
			for i, x := range v.data {
				t.data[i] = T(x)
			}
			consts[id] = t
		case valParam:
			s := gshape(v.shape)
			val := gt.New(gt.WithShape(s...), gt.Of(dt))
			n := gg.NewTensor(eg, dt, len(s), gg.WithShape(s...), gg.WithName("backbone/"+v.param.Name), gg.WithValue(val))
			nodes[id] = n
			params = append(params, ParamNode{Param: v.param, Node: n})
		}
	}
	for _, n := range p.nodes {
		k, err := newKernel[T](n)
		if err != nil {
			return nil, nil, &NodeError{Node: n.name, Op: n.op, Err: err}
		}
		op := &nodeOp[T]{id: opIDs.Add(1), node: n.name, op: n.op, k: k, dt: dt, outShape: shapes[n.out]}
		var children gg.Nodes
		for i, id := range n.in {
			s := slot[T]{child: -1}
			switch {
			case id < 0:
			case consts[id] != nil:
				s.c = consts[id]
			default:
				s.child = len(children)
				children = append(children, nodes[id])
				op.children = append(op.children, i)
			}
			op.slots = append(op.slots, s)
			if id >= 0 {
				op.inShapes = append(op.inShapes, shapes[id])
			} else {
				op.inShapes = append(op.inShapes, nil)
			}
		}
		if len(children) == 0 {
			return nil, nil, &NodeError{Node: n.name, Op: n.op, Err: fmt.Errorf("reads only constants")}
		}
		y, err := gg.ApplyOp(op, children...)
		if err != nil {
			return nil, nil, &NodeError{Node: n.name, Op: n.op, Err: err}
		}
		nodes[n.out] = y
	}
	out := nodes[p.out]
	if out == nil {
		return nil, nil, errorf("To %q was not computed", p.vals[p.out].name)
	}
	// Params in the order of p.params (the order Params reports).
	byParam := map[*Param]ParamNode{}
	for _, pn := range params {
		byParam[pn.Param] = pn
	}
	ordered := make([]ParamNode, 0, len(params))
	for _, q := range p.params {
		if pn, ok := byParam[q]; ok {
			ordered = append(ordered, pn)
		}
	}
	return out, ordered, nil
}

// recoverErr turns a gorgonia panic into an error.
func recoverErr(err *error) {
	if r := recover(); r != nil {
		if e, ok := r.(error); ok {
			*err = errorf("gorgonia: %w", e)
			return
		}
		*err = errorf("gorgonia: %v", r)
	}
}

// maxRuns bounds Infer's cache of per-batch-size graphs.
const maxRuns = 4

// inferRun is a compiled forward graph for one batch size.
type inferRun struct {
	vm     gg.VM
	inputs []*gt.Dense
	params []ParamNode
	out    gg.Value
}

// Infer computes To for a batch in float32: inputs[i] holds batch × prod(InputShapes()[i])
// values of From[i] (row-major, batch first). It returns batch × prod(OutputShape()) values.
// Param Values are read at every call.
func (g *Graph) Infer(inputs [][]float32, batch int) (y []float32, err error) {
	defer recoverErr(&err)
	p := g.p
	if len(inputs) != len(p.inputs) {
		return nil, errorf("Infer got %d inputs, want %d (%v)", len(inputs), len(p.inputs), g.fromNames())
	}
	if batch < 1 {
		return nil, errorf("Infer: batch %d, want at least 1", batch)
	}
	for i, id := range p.inputs {
		shape := append([]int{batch}, p.inShapes[i]...)
		if len(inputs[i]) != numel(shape) {
			return nil, errorf("Infer: input %q has %d values, want %d (shape %s)", p.vals[id].name, len(inputs[i]), numel(shape), shapeString(shape))
		}
	}
	for _, q := range p.params {
		if len(q.Value) != numel(q.Shape) {
			return nil, errorf("Param %q has %d values, want %d", q.Name, len(q.Value), numel(q.Shape))
		}
	}
	r, err := g.run(batch)
	if err != nil {
		return nil, err
	}
	for i, x := range inputs {
		copy(r.inputs[i].Data().([]float32), x)
	}
	LoadParams(r.params)
	r.vm.Reset()
	if err := r.vm.RunAll(); err != nil {
		return nil, runError(err)
	}
	return append([]float32(nil), r.out.Data().([]float32)...), nil
}

func (g *Graph) run(batch int) (*inferRun, error) {
	if r, ok := g.runs[batch]; ok {
		return r, nil
	}
	eg := gg.NewGraph()
	r := &inferRun{}
	var xs gg.Nodes
	for i, id := range g.p.inputs {
		s := append([]int{batch}, g.p.inShapes[i]...)
		v := gt.New(gt.WithShape(s...), gt.Of(gt.Float32))
		xs = append(xs, gg.NewTensor(eg, gt.Float32, len(s), gg.WithShape(s...), gg.WithName(g.p.vals[id].name), gg.WithValue(v)))
		r.inputs = append(r.inputs, v)
	}
	out, params, err := g.AddTo(eg, xs...)
	if err != nil {
		return nil, err
	}
	r.params = params
	read := gg.Read(out, &r.out)
	r.vm = gg.NewTapeMachine(eg.SubgraphRoots(read))
	if len(g.runs) >= maxRuns {
		for k, old := range g.runs {
			old.vm.Close()
			delete(g.runs, k)
		}
	}
	g.runs[batch] = r
	return r, nil
}

// runError returns the *NodeError inside a gorgonia run error, else the error wrapped.
func runError(err error) error {
	var ne *NodeError
	if errors.As(err, &ne) {
		return ne
	}
	return errorf("running the graph: %w", err)
}

// Normalize returns the node of x (n, d) with each row divided by its L2 norm (a zero row stays
// zero, with a zero gradient): ONNX's LpNormalization (axis −1, p = 2) as a gorgonia node, for
// the feature transform between a decoded graph and the head.
func Normalize(x *gg.Node) (n *gg.Node, err error) {
	defer recoverErr(&err)
	s := []int(x.Shape())
	if len(s) != 2 {
		return nil, errorf("Normalize: input of shape %v, want (n, d)", s)
	}
	switch x.Dtype() {
	case gt.Float32:
		return gg.ApplyOp(lpOp[float32](s), x)
	case gt.Float64:
		return gg.ApplyOp(lpOp[float64](s), x)
	}
	return nil, errorf("Normalize: input of dtype %v, want float32 or float64", x.Dtype())
}

func lpOp[T float](s []int) *nodeOp[T] {
	s = append([]int(nil), s...)
	return &nodeOp[T]{id: opIDs.Add(1), node: "normalize", op: "LpNormalization", k: &lpNormK[T]{axis: -1, p: 2},
		slots: []slot[T]{{child: 0}}, inShapes: [][]int{s}, outShape: s, children: []int{0}, dt: dtypeOf[T]()}
}
