package graph

import (
	"errors"
	"fmt"
	"math"
	"strings"

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

// The ops Decode supports; everything else is refused with a suggestion of a later cut.
var supportedOps = map[string]bool{
	"Conv": true, "Gemm": true, "MatMul": true, "Add": true, "Sub": true, "Mul": true,
	"Relu": true, "Clip": true, "BatchNormalization": true, "GlobalAveragePool": true,
	"AveragePool": true, "MaxPool": true, "Flatten": true, "Reshape": true, "Concat": true,
	"Identity": true, "Dropout": true, "Softmax": true, "LpNormalization": true,
}

// arity gives the minimum and maximum input counts per op (-1: no maximum); the first min
// inputs are required (not "").
var arity = map[string][2]int{
	"Conv": {2, 3}, "Gemm": {2, 3}, "MatMul": {2, 2}, "Add": {2, 2}, "Sub": {2, 2}, "Mul": {2, 2},
	"Relu": {1, 1}, "Clip": {1, 3}, "BatchNormalization": {5, 5}, "GlobalAveragePool": {1, 1},
	"AveragePool": {1, 1}, "MaxPool": {1, 1}, "Flatten": {1, 1}, "Reshape": {1, 2}, "Concat": {1, -1},
	"Identity": {1, 1}, "Dropout": {1, 3}, "Softmax": {1, 1}, "LpNormalization": {1, 1},
}

// dataSlots lists, per op, the inputs whose float initializers become parameters when
// Trainable (other constant inputs, such as Clip bounds or BatchNormalization statistics,
// stay fixed). -1 means every input.
var dataSlots = map[string][]int{
	"Conv": {1, 2}, "Gemm": {0, 1, 2}, "MatMul": {0, 1}, "Add": {0, 1}, "Sub": {0, 1},
	"Mul": {0, 1}, "BatchNormalization": {1, 2}, "Concat": {-1},
}

func isDataSlot(op string, i int) bool {
	for _, s := range dataSlots[op] {
		if s == -1 || s == i {
			return true
		}
	}
	return false
}

func errorf(format string, args ...any) error {
	return fmt.Errorf("backbone/graph: "+format, args...)
}

// NodeError reports a node Decode cannot turn into a trainable op, or a node that failed in
// a run (forward or gradient). It wraps ErrUnsupported for unsupported ops and attributes.
type NodeError struct {
	Node, Op string
	// CutAt, for unsupported nodes, names the first tensor after the node (and after every other
	// unsupported node) that alone carries everything To needs: a later cut point for From. It
	// is "" when there is none before To.
	CutAt string
	Err   error
}

func (e *NodeError) Error() string {
	var b strings.Builder
	if errors.Is(e.Err, ErrUnsupported) {
		if e.Err == ErrUnsupported {
			fmt.Fprintf(&b, "backbone/graph: op %q (node %q) is not supported for training", e.Op, e.Node)
		} else {
			fmt.Fprintf(&b, "backbone/graph: op %q (node %q): %v", e.Op, e.Node, e.Err)
		}
		if e.CutAt != "" {
			fmt.Fprintf(&b, "; cut later, e.g. at %q", e.CutAt)
		} else {
			b.WriteString("; there is no later single-tensor cut point before To: move To too")
		}
		return b.String()
	}
	fmt.Fprintf(&b, "backbone/graph: op %q (node %q): %v", e.Op, e.Node, e.Err)
	return b.String()
}

func (e *NodeError) Unwrap() error { return e.Err }

// ErrUnsupported is wrapped by errors for ops, attributes and element types that Decode cannot
// train through.
var ErrUnsupported = errors.New("not supported for training")

func unsupported(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrUnsupported)
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

// ---- attributes ----

func attrInts(n *onnx.NodeProto, name string) []int {
	a := onnxpb.Attr(n, name)
	if a == nil {
		return nil
	}
	r := make([]int, len(a.GetInts()))
	for i, v := range a.GetInts() {
		r[i] = int(v)
	}
	return r
}

func attrFloat(n *onnx.NodeProto, name string, def float64) float64 {
	if a := onnxpb.Attr(n, name); a != nil {
		return float64(a.GetF())
	}
	return def
}

func attrString(n *onnx.NodeProto, name, def string) string {
	if a := onnxpb.Attr(n, name); a != nil {
		return string(a.GetS())
	}
	return def
}

// scalarInput returns the single value of an optional constant input (ok false when absent).
func scalarInput(n *onnx.NodeProto, i int, consts map[string]*onnx.TensorProto) (v float64, ok bool, err error) {
	if i >= len(n.GetInput()) || n.GetInput()[i] == "" {
		return 0, false, nil
	}
	name := n.GetInput()[i]
	ct := consts[name]
	if ct == nil {
		return 0, false, unsupported("input %q must be a constant", name)
	}
	d, err := floatsOf(ct)
	if err != nil {
		return 0, false, fmt.Errorf("input %q: %w", name, err)
	}
	if len(d) != 1 {
		return 0, false, fmt.Errorf("input %q has %d values, want a scalar", name, len(d))
	}
	return d[0], true, nil
}

func parseWindow(n *onnx.NodeProto, pool bool) (window, error) {
	w := window{
		kernel: attrInts(n, "kernel_shape"), strides: attrInts(n, "strides"),
		dilations: attrInts(n, "dilations"), pads: attrInts(n, "pads"),
		ceil: onnxpb.AttrIntOr(n, "ceil_mode", 0) != 0,
	}
	switch ap := attrString(n, "auto_pad", "NOTSET"); ap {
	case "NOTSET", "":
	case "SAME_UPPER":
		w.autoPad = padSameUpper
	case "SAME_LOWER":
		w.autoPad = padSameLower
	case "VALID":
		w.autoPad = padValid
	default:
		return w, fmt.Errorf("unknown auto_pad %q", ap)
	}
	if pool && w.kernel == nil {
		return w, fmt.Errorf("kernel_shape is required")
	}
	if nd := len(w.kernel); w.kernel != nil && nd != 1 && nd != 2 {
		return w, unsupported("%d-D windows (only 1-D and 2-D)", nd)
	}
	for _, p := range w.pads {
		if p < 0 {
			return w, fmt.Errorf("negative pads %v", w.pads)
		}
	}
	return w, nil
}

// parseAttrs validates a node's attributes and returns its op-specific settings and the inputs
// consumed at decode time (constant shapes, bounds, statistics), which the node does not read
// at run time.
func parseAttrs(n *onnx.NodeProto, opset int64, consts map[string]*onnx.TensorProto) (any, map[int]bool, error) {
	fixed := map[int]bool{}
	in := n.GetInput()
	switch n.GetOpType() {
	case "Conv":
		w, err := parseWindow(n, false)
		if err != nil {
			return nil, nil, err
		}
		if w.ceil {
			return nil, nil, fmt.Errorf("ceil_mode is not a Conv attribute")
		}
		if ct := consts[in[1]]; ct != nil && len(ct.GetDims()) != 3 && len(ct.GetDims()) != 4 {
			return nil, nil, unsupported("weight %q of rank %d: only 1-D and 2-D convolutions", in[1], len(ct.GetDims()))
		}
		return &convAttrs{window: w, group: int(onnxpb.AttrIntOr(n, "group", 1))}, fixed, nil
	case "MaxPool", "AveragePool":
		w, err := parseWindow(n, true)
		if err != nil {
			return nil, nil, err
		}
		if n.GetOpType() == "MaxPool" && onnxpb.AttrIntOr(n, "storage_order", 0) != 0 && len(n.GetOutput()) > 1 {
			return nil, nil, unsupported("storage_order")
		}
		return &poolAttrs{window: w, isMax: n.GetOpType() == "MaxPool", includePad: onnxpb.AttrIntOr(n, "count_include_pad", 0) != 0}, fixed, nil
	case "Gemm":
		return &gemmAttrs{alpha: attrFloat(n, "alpha", 1), beta: attrFloat(n, "beta", 1),
			transA: onnxpb.AttrIntOr(n, "transA", 0) != 0, transB: onnxpb.AttrIntOr(n, "transB", 0) != 0}, fixed, nil
	case "Add", "Sub", "Mul":
		if onnxpb.Attr(n, "axis") != nil {
			return nil, nil, unsupported("legacy broadcast with an axis attribute")
		}
		return nil, fixed, nil
	case "Clip":
		c := &clipAttrs{lo: math.Inf(-1), hi: math.Inf(1)}
		if opset < 11 {
			c.lo, c.hi = attrFloat(n, "min", c.lo), attrFloat(n, "max", c.hi)
			return c, fixed, nil
		}
		for i, dst := range []*float64{&c.lo, &c.hi} {
			v, ok, err := scalarInput(n, i+1, consts)
			if err != nil {
				return nil, nil, err
			}
			if ok {
				*dst = v
			}
			fixed[i+1] = true
		}
		return c, fixed, nil
	case "BatchNormalization":
		if onnxpb.AttrIntOr(n, "training_mode", 0) != 0 {
			return nil, nil, unsupported("training_mode=1 (batch statistics)")
		}
		if opset < 9 && onnxpb.AttrIntOr(n, "spatial", 1) == 0 {
			return nil, nil, unsupported("spatial=0")
		}
		if opset < 7 && onnxpb.AttrIntOr(n, "is_test", 0) == 0 && len(n.GetOutput()) > 1 {
			return nil, nil, unsupported("training mode (is_test=0)")
		}
		if len(in) != 5 {
			return nil, nil, fmt.Errorf("%d inputs, want 5", len(in))
		}
		b := &bnAttrs{eps: attrFloat(n, "epsilon", 1e-5)}
		for i, dst := range []*[]float64{&b.mean, &b.variance} {
			ct := consts[in[3+i]]
			if ct == nil {
				return nil, nil, unsupported("running statistic %q must be a constant", in[3+i])
			}
			d, err := floatsOf(ct)
			if err != nil {
				return nil, nil, err
			}
			*dst = d
			fixed[3+i] = true
		}
		for i := 1; i <= 2; i++ {
			if consts[in[i]] == nil {
				return nil, nil, unsupported("scale and bias must be constants, %q is computed", in[i])
			}
		}
		return b, fixed, nil
	case "Flatten":
		return &reshapeAttrs{flatten: true, axis: int(onnxpb.AttrIntOr(n, "axis", 1))}, fixed, nil
	case "Reshape":
		r := &reshapeAttrs{allowZero: onnxpb.AttrIntOr(n, "allowzero", 0) != 0}
		if opset < 5 {
			a := onnxpb.Attr(n, "shape")
			if a == nil {
				return nil, nil, fmt.Errorf("no shape attribute")
			}
			r.target = append([]int64(nil), a.GetInts()...)
			return r, fixed, nil
		}
		if len(in) < 2 || consts[in[1]] == nil {
			return nil, nil, unsupported("shape input must be a constant (a computed shape, e.g. from Shape, is not supported)")
		}
		s, err := onnxpb.Int64s(consts[in[1]])
		if err != nil {
			return nil, nil, fmt.Errorf("shape %q: %w", in[1], err)
		}
		r.target = s
		fixed[1] = true
		return r, fixed, nil
	case "Concat":
		if onnxpb.Attr(n, "axis") == nil && opset >= 4 {
			return nil, nil, fmt.Errorf("axis is required")
		}
		return &concatAttrs{axis: int(onnxpb.AttrIntOr(n, "axis", 1))}, fixed, nil
	case "Identity", "Relu", "GlobalAveragePool", "MatMul":
		return nil, fixed, nil
	case "Dropout":
		if len(in) > 2 && in[2] != "" {
			ct := consts[in[2]]
			if ct == nil {
				return nil, nil, unsupported("training_mode must be a constant")
			}
			v, err := onnxpb.Floats(ct)
			if err != nil {
				return nil, nil, err
			}
			if len(v) == 1 && v[0] != 0 {
				return nil, nil, unsupported("training_mode=true")
			}
		}
		for i := 1; i < len(in); i++ {
			fixed[i] = true
		}
		return nil, fixed, nil
	case "Softmax":
		if opset < 13 {
			return &softmaxAttrs{axis: int(onnxpb.AttrIntOr(n, "axis", 1)), legacy: true}, fixed, nil
		}
		return &softmaxAttrs{axis: int(onnxpb.AttrIntOr(n, "axis", -1))}, fixed, nil
	case "LpNormalization":
		p := int(onnxpb.AttrIntOr(n, "p", 2))
		if p != 1 && p != 2 {
			return nil, nil, fmt.Errorf("p = %d, want 1 or 2", p)
		}
		return &lpAttrs{axis: int(onnxpb.AttrIntOr(n, "axis", -1)), p: p}, fixed, nil
	}
	return nil, nil, ErrUnsupported
}

type convAttrs struct {
	window
	group int
}

type poolAttrs struct {
	window
	isMax, includePad bool
}

type gemmAttrs struct {
	alpha, beta    float64
	transA, transB bool
}

type clipAttrs struct{ lo, hi float64 }

type bnAttrs struct {
	eps            float64
	mean, variance []float64
}

type reshapeAttrs struct {
	flatten   bool
	axis      int
	target    []int64
	allowZero bool
}

type concatAttrs struct{ axis int }

type softmaxAttrs struct {
	axis   int
	legacy bool
}

type lpAttrs struct{ axis, p int }

// foldBatchNorms folds each BatchNormalization whose input comes only from a Conv with
// constant (or parameter) weight and bias used by no other node into that Conv:
// W' = W·s, B' = (B − mean)·s + beta with s = gamma/sqrt(var + ε) per output channel.
func foldBatchNorms(p *plan) {
	uses := make([]int, len(p.vals))
	for _, n := range p.nodes {
		for _, in := range n.in {
			if in >= 0 {
				uses[in]++
			}
		}
	}
	uses[p.out]++ // To is used by the caller
	producer := map[int]*pnode{}
	for _, n := range p.nodes {
		producer[n.out] = n
	}
	fixedVal := func(id int) bool {
		k := p.vals[id].kind
		return k == valConst || k == valParam
	}
	dataOf := func(id int) []float64 {
		if v := p.vals[id]; v.kind == valParam {
			return v.param.Value
		}
		return p.vals[id].data
	}
	var kept []*pnode
	removed := map[*pnode]bool{}
	for _, bn := range p.nodes {
		if bn.op != "BatchNormalization" {
			continue
		}
		conv := producer[bn.in[0]]
		if conv == nil || conv.op != "Conv" || uses[conv.out] != 1 {
			continue
		}
		w := conv.in[1]
		if !fixedVal(w) || uses[w] != 1 || !fixedVal(bn.in[1]) || !fixedVal(bn.in[2]) {
			continue
		}
		hasB := len(conv.in) > 2 && conv.in[2] >= 0
		if hasB && (!fixedVal(conv.in[2]) || uses[conv.in[2]] != 1) {
			continue
		}
		a := bn.attrs.(*bnAttrs)
		ws := p.vals[w].shape
		mOut := ws[0]
		gamma, beta := dataOf(bn.in[1]), dataOf(bn.in[2])
		if len(gamma) != mOut || len(beta) != mOut || len(a.mean) != mOut || len(a.variance) != mOut {
			continue // shapes disagree: leave it to the run-time checks
		}
		per := numel(ws[1:])
		wd := dataOf(w)
		var bd []float64
		if hasB {
			bd = dataOf(conv.in[2])
		} else {
			bd = make([]float64, mOut)
		}
		nw := make([]float64, len(wd))
		nb := make([]float64, mOut)
		for o := 0; o < mOut; o++ {
			s := gamma[o] / math.Sqrt(a.variance[o]+a.eps)
			for j := 0; j < per; j++ {
				nw[o*per+j] = wd[o*per+j] * s
			}
			nb[o] = (bd[o]-a.mean[o])*s + beta[o]
		}
		setData(p, w, nw)
		// BN's own parameters are gone: drop them if no other node reads them.
		for _, id := range bn.in[1:3] {
			uses[id]--
			if uses[id] == 0 && p.vals[id].kind == valParam {
				dropParam(p, p.vals[id].param)
			}
		}
		if hasB {
			setData(p, conv.in[2], nb)
		} else {
			// The folded bias is named after BN's bias tensor (suffixed when that stays in use).
			name := p.vals[bn.in[2]].name
			if uses[bn.in[2]] > 0 {
				name += "_folded"
			}
			bv := &pvalue{name: name, kind: p.vals[w].kind, shape: []int{mOut}, data: nb}
			if bv.kind == valParam {
				bv.param = &Param{Name: name, Shape: []int{mOut}, Value: nb, Grad: make([]float64, mOut)}
				bv.data = nil
				p.params = append(p.params, bv.param)
			}
			p.vals = append(p.vals, bv)
			conv.in = append(conv.in[:2], len(p.vals)-1)
		}
		conv.out = bn.out
		removed[bn] = true
		p.folded = append(p.folded, conv.name+" <- "+bn.name)
	}
	for _, n := range p.nodes {
		if !removed[n] {
			kept = append(kept, n)
		}
	}
	p.nodes = kept
}

func setData(p *plan, id int, d []float64) {
	v := p.vals[id]
	if v.kind == valParam {
		v.param.Value = d
		return
	}
	v.data = d
}

func dropParam(p *plan, q *Param) {
	for i, x := range p.params {
		if x == q {
			p.params = append(p.params[:i], p.params[i+1:]...)
			return
		}
	}
}

// Supports reports whether Decode decodes (and can train) nodes of the default-domain op type
// op. Quantized ops are not among them: weights.DequantizeModel converts them to float first.
func Supports(op string) bool { return supportedOps[op] }
