package graph

import (
	"errors"
	"fmt"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/internal/onnxpb"
)

// Decoding is type-independent: it produces a plan (values, constants, parameters and nodes
// with parsed attributes) that engine[T] instantiates for float32 (Graph) or float64 (tests).

type valKind int

const (
	valNode  valKind = iota // computed by a node
	valInput                // one of Options.From
	valConst                // a fixed float constant
	valParam                // a trainable parameter (Param)
)

type pvalue struct {
	name  string
	kind  valKind
	shape []int
	data  []float64 // valConst
	param *Param    // valParam
}

type pnode struct {
	name, op string
	in       []int // value ids; -1 for an absent optional input
	out      int
	attrs    any // op-specific: *convAttrs, *gemmK...
}

type plan struct {
	vals     []*pvalue
	inputs   []int
	inShapes [][]int
	nodes    []*pnode
	out      int
	params   []*Param
	folded   []string // "conv <- bn" descriptions
}

func nodeName(n *onnx.NodeProto) string {
	if n.GetName() != "" {
		return n.GetName()
	}
	if len(n.GetOutput()) > 0 {
		return n.GetOutput()[0]
	}
	return "?"
}

func constantOf(n *onnx.NodeProto) (*onnx.TensorProto, error) {
	for _, a := range n.GetAttribute() {
		switch a.GetName() {
		case "value":
			return a.GetT(), nil
		case "value_float":
			return onnxpb.FloatTensor("", nil, []float32{a.GetF()}), nil
		case "value_floats":
			return onnxpb.FloatTensor("", []int64{int64(len(a.GetFloats()))}, a.GetFloats()), nil
		case "value_int":
			return onnxpb.Int64Tensor("", nil, []int64{a.GetI()}), nil
		case "value_ints":
			return onnxpb.Int64Tensor("", []int64{int64(len(a.GetInts()))}, a.GetInts()), nil
		}
	}
	return nil, unsupported("Constant without a value, value_float(s) or value_int(s) attribute")
}

func dimsOf(t *onnx.TensorProto) []int {
	d := make([]int, len(t.GetDims()))
	for i, v := range t.GetDims() {
		d[i] = int(v)
	}
	return d
}

func floatsOf(t *onnx.TensorProto) ([]float64, error) {
	f, err := onnxpb.Floats(t)
	if err != nil {
		return nil, err
	}
	d := make([]float64, len(f))
	for i, v := range f {
		d[i] = float64(v)
	}
	return d, nil
}

// decodePlan extracts the subgraph between opts.From and opts.To and parses it.
func decodePlan(m *onnx.ModelProto, opts Options) (*plan, error) {
	g := m.GetGraph()
	if g == nil {
		return nil, errorf("model has no graph")
	}
	if len(opts.From) == 0 || opts.To == "" {
		return nil, errorf("Options.From and Options.To must be set")
	}
	if opts.InputShapes != nil && len(opts.InputShapes) != len(opts.From) {
		return nil, errorf("Options.InputShapes has %d shapes for %d From tensors", len(opts.InputShapes), len(opts.From))
	}
	opset := onnxpb.OpsetVersion(m, "")
	inits := onnxpb.Initializers(g)
	prod := onnxpb.Producers(g)
	from := map[string]int{}
	for i, f := range opts.From {
		if _, dup := from[f]; dup {
			return nil, errorf("From lists %q twice", f)
		}
		if _, ok := inits[f]; ok {
			return nil, errorf("From %q is an initializer, not an activation", f)
		}
		from[f] = i
	}
	// Walk back from To, stopping at From tensors and constants.
	needed := map[*onnx.NodeProto]bool{}
	consts := map[string]*onnx.TensorProto{}
	usedFrom := map[string]bool{}
	type item struct{ tensor, consumer string }
	stack := []item{{opts.To, ""}}
	seen := map[string]bool{}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		t := it.tensor
		if t == "" || seen[t] {
			continue
		}
		seen[t] = true
		if _, ok := from[t]; ok {
			usedFrom[t] = true
			continue
		}
		if ti, ok := inits[t]; ok {
			consts[t] = ti
			continue
		}
		n, ok := prod[t]
		if !ok {
			if it.consumer == "" {
				return nil, errorf("To %q is not a tensor of the graph", t)
			}
			return nil, errorf("tensor %q (read by node %q) is not computed from From %q: it is a graph input or unknown; add it to From or cut later", t, it.consumer, opts.From)
		}
		if n.GetOpType() == "Constant" && (n.GetDomain() == "" || n.GetDomain() == "ai.onnx") {
			ct, err := constantOf(n)
			if err != nil {
				return nil, &NodeError{Node: nodeName(n), Op: "Constant", Err: err}
			}
			consts[t] = ct
			continue
		}
		needed[n] = true
		for _, in := range n.GetInput() {
			stack = append(stack, item{in, nodeName(n)})
		}
	}
	for _, f := range opts.From {
		if !usedFrom[f] {
			if f == opts.To {
				continue
			}
			return nil, errorf("From %q is not used to compute To %q (is it a tensor of the graph, before To?)", f, opts.To)
		}
	}
	var nodes []*onnx.NodeProto
	for _, n := range g.GetNode() {
		if needed[n] {
			nodes = append(nodes, n)
		}
	}
	if err := checkOrder(nodes, from, consts); err != nil {
		return nil, err
	}
	// Unsupported ops and attributes: report the last one, with a later cut point.
	p := &plan{}
	ids := map[string]int{}
	addVal := func(v *pvalue) int {
		p.vals = append(p.vals, v)
		ids[v.name] = len(p.vals) - 1
		return len(p.vals) - 1
	}
	for i, f := range opts.From {
		shape, err := inputShape(g, f, opts, i)
		if err != nil {
			return nil, err
		}
		p.inputs = append(p.inputs, addVal(&pvalue{name: f, kind: valInput}))
		p.inShapes = append(p.inShapes, shape)
	}
	params := map[string]int{}
	var unsup *NodeError
	unsupIdx := -1
	for idx, n := range nodes {
		op := n.GetOpType()
		nn := &pnode{name: nodeName(n), op: op}
		fail := func(err error) error { return &NodeError{Node: nn.name, Op: op, Err: err} }
		if d := n.GetDomain(); d != "" && d != "ai.onnx" {
			unsup, unsupIdx = &NodeError{Node: nn.name, Op: d + "." + op, Err: ErrUnsupported}, idx
			continue
		}
		if !supportedOps[op] {
			unsup, unsupIdx = &NodeError{Node: nn.name, Op: op, Err: ErrUnsupported}, idx
			continue
		}
		// Only the first output may be used (Dropout masks, MaxPool indices, training BN stats).
		for oi, o := range n.GetOutput()[1:] {
			if o != "" && (seen[o] || o == opts.To) {
				unsup, unsupIdx = &NodeError{Node: nn.name, Op: op, Err: unsupported("output %d (%q) is used", oi+1, o)}, idx
			}
		}
		ar, in := arity[op], n.GetInput()
		if len(in) < ar[0] || (ar[1] >= 0 && len(in) > ar[1]) || len(n.GetOutput()) == 0 || n.GetOutput()[0] == "" {
			return nil, fail(fmt.Errorf("%d inputs and %d outputs: want %d to %d inputs and an output", len(in), len(n.GetOutput()), ar[0], ar[1]))
		}
		for i := 0; i < ar[0]; i++ {
			if in[i] == "" {
				return nil, fail(fmt.Errorf("required input %d is empty", i))
			}
		}
		attrs, fixedIn, err := parseAttrs(n, opset, consts)
		if err != nil {
			if errors.Is(err, ErrUnsupported) {
				unsup, unsupIdx = &NodeError{Node: nn.name, Op: op, Err: err}, idx
				continue
			}
			return nil, fail(err)
		}
		nn.attrs = attrs
		if unsup != nil {
			continue // keep parsing to find the last unsupported node
		}
		for i, in := range n.GetInput() {
			if in == "" || fixedIn[i] {
				nn.in = append(nn.in, -1)
				continue
			}
			if id, ok := ids[in]; ok {
				nn.in = append(nn.in, id)
				continue
			}
			ct, ok := consts[in]
			if !ok {
				return nil, fail(fmt.Errorf("input %q is not computed before the node", in))
			}
			if dt := ct.GetDataType(); dt != onnxpb.Float && dt != onnxpb.Double {
				return nil, fail(unsupported("input %q has element type %s; float expected", in, onnxpb.DTypeName(dt)))
			}
			data, err := floatsOf(ct)
			if err != nil {
				return nil, fail(fmt.Errorf("input %q: %w", in, err))
			}
			v := &pvalue{name: in, kind: valConst, shape: dimsOf(ct), data: data}
			if opts.Trainable && isDataSlot(op, i) {
				if _, isInit := inits[in]; isInit {
					v.kind = valParam
					v.param = &Param{Name: in, Shape: v.shape, Value: data, Grad: make([]float64, len(data))}
					params[in] = len(p.params)
					p.params = append(p.params, v.param)
					v.data = nil
				}
			}
			nn.in = append(nn.in, addVal(v))
		}
		nn.out = addVal(&pvalue{name: n.GetOutput()[0], kind: valNode})
		p.nodes = append(p.nodes, nn)
	}
	if unsup != nil {
		unsup.CutAt = cutAfter(nodes, unsupIdx, from, opts.To)
		return nil, unsup
	}
	out, ok := ids[opts.To]
	if !ok {
		return nil, errorf("To %q was not computed", opts.To)
	}
	p.out = out
	foldBatchNorms(p)
	return p, nil
}

// checkOrder verifies that every node input is available when the node runs (ONNX graphs are
// topologically sorted).
func checkOrder(nodes []*onnx.NodeProto, from map[string]int, consts map[string]*onnx.TensorProto) error {
	avail := map[string]bool{}
	for f := range from {
		avail[f] = true
	}
	for _, n := range nodes {
		for _, in := range n.GetInput() {
			if in != "" && !avail[in] && consts[in] == nil {
				return errorf("node %q reads %q before it is computed: the graph is not topologically sorted", nodeName(n), in)
			}
		}
		for _, o := range n.GetOutput() {
			avail[o] = true
		}
	}
	return nil
}

// cutAfter returns the first tensor produced at or after nodes[idx] that is, at that point,
// the only live activation needed to compute to: a single-tensor cut point ("" when that
// tensor would be To itself or there is none).
func cutAfter(nodes []*onnx.NodeProto, idx int, from map[string]int, to string) string {
	lastUse := map[string]int{}
	for i, n := range nodes {
		for _, in := range n.GetInput() {
			lastUse[in] = i
		}
	}
	live := map[string]bool{}
	for f := range from {
		live[f] = true
	}
	for i, n := range nodes {
		for _, o := range n.GetOutput() {
			if o != "" {
				live[o] = true
			}
		}
		for t := range live {
			if last, used := lastUse[t]; t != to && (!used || last <= i) {
				delete(live, t) // not read after node i
			}
		}
		if i >= idx && len(live) == 1 {
			for t := range live {
				if t != to {
					return t
				}
			}
			return ""
		}
	}
	return ""
}

func inputShape(g *onnx.GraphProto, name string, opts Options, i int) ([]int, error) {
	var vi *onnx.ValueInfoProto
	for _, list := range [][]*onnx.ValueInfoProto{g.GetInput(), g.GetValueInfo(), g.GetOutput()} {
		for _, v := range list {
			if v.GetName() == name {
				vi = v
			}
		}
	}
	if vi != nil {
		if vi.GetType().GetTensorType() == nil {
			return nil, &NodeError{Node: name, Op: "input", Err: unsupported("From %q is not a tensor", name)}
		}
		if et := onnxpb.ElemType(vi); et != 0 && et != onnxpb.Float {
			return nil, &NodeError{Node: name, Op: "input", Err: unsupported("From %q has element type %s; only float32 is supported", name, onnxpb.DTypeName(et))}
		}
	}
	if opts.InputShapes != nil && opts.InputShapes[i] != nil {
		s := append([]int(nil), opts.InputShapes[i]...)
		for _, d := range s {
			if d <= 0 {
				return nil, errorf("Options.InputShapes[%d] = %v: sizes must be positive", i, s)
			}
		}
		return s, nil
	}
	if vi == nil {
		return nil, errorf("the shape of From %q is not declared in the model (graph input, value_info or output): pass Options.InputShapes", name)
	}
	dims, _, ok := onnxpb.Shape(vi)
	if !ok || len(dims) == 0 {
		return nil, errorf("From %q has no declared shape with a batch axis: pass Options.InputShapes", name)
	}
	s := make([]int, len(dims)-1)
	for j, d := range dims[1:] {
		if d <= 0 {
			return nil, errorf("From %q has a dynamic axis %d besides the batch axis: pass Options.InputShapes", name, j+1)
		}
		s[j] = int(d)
	}
	return s, nil
}
