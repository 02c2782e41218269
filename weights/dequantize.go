package weights

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"
)

// ErrUnsupported is wrapped by the errors of DequantizeModel for a quantized op, or a use of a
// quantized tensor, that has no float conversion.
var ErrUnsupported = errors.New("unsupported")

// NodeError is the error of DequantizeModel for one node of the graph.
type NodeError struct {
	Index int    // position of the node in the graph's node list
	Node  string // node name (may be empty in ONNX)
	Op    string // op type, e.g. "QLinearConv"
	Err   error
}

func (e *NodeError) Error() string {
	return fmt.Sprintf("weights: node %q (#%d, op %q): %v", e.Node, e.Index, e.Op, e.Err)
}

func (e *NodeError) Unwrap() error { return e.Err }

// Report summarises what DequantizeModel did.
type Report struct {
	// Converted counts the quantized nodes replaced by float ones, by op type
	// (e.g. "QLinearConv": 52).
	Converted map[string]int
	// PassThrough counts the nodes kept unchanged that move quantized values without arithmetic
	// (Reshape, Flatten, MaxPool, ...), by op type; they now move the float values.
	PassThrough map[string]int
	// WeightTensors is the number of constant quantized tensors (weights, biases, constant
	// operands) dequantized into float32 initializers; WeightElements their number of elements.
	WeightTensors  int
	WeightElements int
	// Clips is the number of Clip nodes inserted to keep each value in its quantization range.
	Clips int
	// DroppedInitializers is the number of initializers left unused and removed (quantized
	// weights, scales, zero points).
	DroppedInitializers int
	// FloatTensors lists, sorted, the tensors that held quantized (uint8/int8) values and now hold
	// their float32 values under the same name, e.g. "464_quantized".
	FloatTensors []string
}

// String returns a one-line summary of r.
func (r *Report) String() string {
	var b strings.Builder
	b.WriteString("converted")
	for _, k := range sortedKeys(r.Converted) {
		fmt.Fprintf(&b, " %s=%d", k, r.Converted[k])
	}
	if len(r.PassThrough) > 0 {
		b.WriteString("; passed through")
		for _, k := range sortedKeys(r.PassThrough) {
			fmt.Fprintf(&b, " %s=%d", k, r.PassThrough[k])
		}
	}
	fmt.Fprintf(&b, "; %d weight tensors (%d values) dequantized; %d clips; %d initializers dropped",
		r.WeightTensors, r.WeightElements, r.Clips, r.DroppedInitializers)
	return b.String()
}

// MetadataKey is the metadata_props key DequantizeModel sets on the models it returns.
const MetadataKey = "grouploss.weights.dequantized"

// DequantizeModel returns a new float32 model computing the function of the quantized model m
// (QDQ or QLinear* form, e.g. onnxruntime's quantizer output); m is not modified.
//
// Each quantized value is replaced by its real value (q - zero_point) * scale, as float32, under
// the same tensor name: "464_quantized" of the int8 MobileNetV2 holds the pooled float features.
// Each quantized op becomes its float op followed by a Clip to the range its output can represent,
// [(qmin - zero_point) * scale, (qmax - zero_point) * scale] with qmin, qmax the limits of the
// output's element type; the clip reproduces the ReLU/ReLU6 fused into the quantization. The only
// difference from exact integer arithmetic left is the rounding of each output to its grid (at most
// half a quantization step per op). The conversions:
//
//	QuantizeLinear(x)           -> Clip(x)           (folded into an initializer for a constant x)
//	DequantizeLinear(x)         -> Identity(x)       (a float32 initializer for a constant x)
//	QLinearConv(x, w, B)        -> Conv(x, W, B') + Clip,  W = (w - wz) * ws per output channel,
//	                               B' = B * xs * ws
//	QLinearMatMul(a, b)         -> MatMul + Clip     (per-column b scales allowed)
//	QLinearAdd, QLinearMul      -> Add, Mul + Clip   (com.microsoft)
//	QLinearGlobalAveragePool    -> GlobalAveragePool + Clip (com.microsoft, channels_last=0)
//
// Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity, MaxPool, Gather, Slice, Split,
// Expand, Tile, DepthToSpace, SpaceToDepth and Concat (inputs sharing one quantization) pass
// quantized values through unchanged, and Shape and Size may read them. Activations must be
// quantized per tensor; constants may be quantized per axis. Scales and zero points must be
// constants (initializers or Constant nodes).
//
// Tensor names, graph inputs and outputs and opset imports are kept (a graph output that held a
// quantized tensor becomes float32); new tensors and nodes get fresh names; unused initializers are
// dropped. Errors: an unknown quantized op, or a quantized tensor reaching an op with no float
// meaning for it, gives a *NodeError wrapping ErrUnsupported that names the node and op.
func DequantizeModel(m *onnx.ModelProto) (*onnx.ModelProto, *Report, error) {
	if m == nil || m.Graph == nil {
		return nil, nil, errors.New("weights: model has no graph")
	}
	opset := int64(-1)
	for _, o := range m.OpsetImport {
		if isDefaultDomain(o.Domain) {
			opset = o.Version
		}
	}
	if opset < 10 {
		return nil, nil, fmt.Errorf("weights: default-domain opset %d: quantized ops need opset >= 10", opset)
	}
	out := proto.Clone(m).(*onnx.ModelProto)
	g := out.Graph
	c := &converter{
		opset:     opset,
		consts:    map[string]*onnx.TensorProto{},
		quant:     map[string]qparams{},
		names:     map[string]bool{},
		nodeNames: map[string]bool{},
		dq:        map[string]string{},
		rep:       &Report{Converted: map[string]int{}, PassThrough: map[string]int{}},
	}
	for _, t := range g.Initializer {
		c.consts[t.Name] = t
	}
	collectNames(g, c.names, c.nodeNames)
	for i, n := range g.Node {
		if n.OpType == "Constant" && isDefaultDomain(n.Domain) && len(n.Output) == 1 {
			for _, a := range n.Attribute {
				if a.Name == "value" && a.T != nil {
					c.consts[n.Output[0]] = a.T
				}
			}
		}
		if err := checkSubgraphs(n); err != nil {
			return nil, nil, &NodeError{Index: i, Node: n.Name, Op: n.OpType, Err: err}
		}
	}
	for i, n := range g.Node {
		if err := c.node(n); err != nil {
			return nil, nil, &NodeError{Index: i, Node: n.Name, Op: n.OpType, Err: err}
		}
	}
	g.Node = c.nodes
	g.Initializer = append(g.Initializer, c.inits...)
	c.prune(g)
	for _, vi := range append(append([]*onnx.ValueInfoProto(nil), g.ValueInfo...), g.Output...) {
		if _, ok := c.quant[vi.Name]; ok {
			if tt := vi.GetType().GetTensorType(); tt != nil {
				tt.ElemType = int32(onnx.TensorProto_FLOAT)
			}
		}
	}
	c.rep.FloatTensors = sortedKeys(c.quant)
	out.MetadataProps = append(out.MetadataProps, &onnx.StringStringEntryProto{
		Key:   MetadataKey,
		Value: "float32 model from a quantized one by github.com/grouploss/pipeline/weights; " + c.rep.String(),
	})
	return out, c.rep, nil
}

// qparams is the per-tensor quantization of an activation.
type qparams struct {
	scale float32
	zero  int32
	elem  onnx.TensorProto_DataType
}

type converter struct {
	opset     int64
	consts    map[string]*onnx.TensorProto // initializers and Constant node values
	quant     map[string]qparams           // quantized values, now float under the same name
	names     map[string]bool              // every tensor name in use
	nodeNames map[string]bool
	dq        map[string]string // dequantized constants: key -> initializer name
	inits     []*onnx.TensorProto
	nodes     []*onnx.NodeProto
	rep       *Report
}

func isDefaultDomain(d string) bool { return d == "" || d == "ai.onnx" }

// isQuantizedOp tells whether an op type names a quantized computation.
func isQuantizedOp(n *onnx.NodeProto) bool {
	op := n.OpType
	if strings.HasPrefix(op, "QLinear") || strings.Contains(op, "Integer") || strings.Contains(op, "Quantize") {
		return true
	}
	// com.microsoft's QGemm, QAttention, QOrderedMatMul, QEmbedLayerNormalization, ...
	return n.Domain == "com.microsoft" && len(op) > 1 && op[0] == 'Q' && op[1] >= 'A' && op[1] <= 'Z'
}

// passThrough lists default-domain ops that move a quantized data input (input 0) to their first
// output (all outputs for Split) without arithmetic, so they move the real values alike.
var passThrough = map[string]bool{
	"Reshape": true, "Flatten": true, "Transpose": true, "Squeeze": true, "Unsqueeze": true,
	"Identity": true, "MaxPool": true, "Gather": true, "Slice": true, "Split": true, "Expand": true,
	"Tile": true, "DepthToSpace": true, "SpaceToDepth": true,
}

func (c *converter) node(n *onnx.NodeProto) error {
	known := isDefaultDomain(n.Domain) || n.Domain == "com.microsoft"
	switch {
	case known && n.OpType == "QuantizeLinear":
		return c.quantizeLinear(n)
	case known && n.OpType == "DequantizeLinear":
		return c.dequantizeLinear(n)
	case known && n.OpType == "QLinearConv":
		return c.qlinearConv(n)
	case known && n.OpType == "QLinearMatMul":
		return c.qlinearMatMul(n)
	case known && (n.OpType == "QLinearAdd" || n.OpType == "QLinearMul"):
		return c.qlinearBinary(n, strings.TrimPrefix(n.OpType, "QLinear"))
	case known && n.OpType == "QLinearGlobalAveragePool":
		return c.qlinearGlobalAveragePool(n)
	case isQuantizedOp(n):
		return fmt.Errorf("quantized op (domain %q) has no float conversion: %w", n.Domain, ErrUnsupported)
	}
	return c.other(n)
}

func input(n *onnx.NodeProto, i int) string {
	if i < len(n.Input) {
		return n.Input[i]
	}
	return ""
}

func attrInt(n *onnx.NodeProto, name string, def int64) int64 {
	for _, a := range n.Attribute {
		if a.Name == name {
			return a.I
		}
	}
	return def
}

func checkArity(n *onnx.NodeProto, min, max, outs int) error {
	if len(n.Input) < min || len(n.Input) > max {
		return fmt.Errorf("%d inputs, want %d to %d", len(n.Input), min, max)
	}
	if len(n.Output) != outs {
		return fmt.Errorf("%d outputs, want %d", len(n.Output), outs)
	}
	return nil
}

// params reads a scale and an optional zero point (uint8 zeros when zeroName is empty).
func (c *converter) params(scaleName, zeroName string) (scales []float32, zeros []int32, elem onnx.TensorProto_DataType, err error) {
	st, ok := c.consts[scaleName]
	if !ok {
		return nil, nil, 0, fmt.Errorf("scale %q is not a constant", scaleName)
	}
	if scales, err = tensorFloats(st); err != nil {
		return nil, nil, 0, err
	}
	if len(scales) == 0 {
		return nil, nil, 0, fmt.Errorf("scale %q is empty", scaleName)
	}
	elem = onnx.TensorProto_UINT8
	zeros = make([]int32, len(scales))
	if zeroName != "" {
		zt, ok := c.consts[zeroName]
		if !ok {
			return nil, nil, 0, fmt.Errorf("zero point %q is not a constant", zeroName)
		}
		z, err := tensorInts(zt)
		if err != nil {
			return nil, nil, 0, err
		}
		switch {
		case len(z) == len(scales):
			copy(zeros, z)
		case len(z) == 1:
			for i := range zeros {
				zeros[i] = z[0]
			}
		default:
			return nil, nil, 0, fmt.Errorf("zero point %q has %d elements, scale %q %d", zeroName, len(z), scaleName, len(scales))
		}
		elem = onnx.TensorProto_DataType(zt.DataType)
	}
	return scales, zeros, elem, nil
}

// scalarParams reads a per-tensor quantization.
func (c *converter) scalarParams(scaleName, zeroName string) (qparams, error) {
	s, z, elem, err := c.params(scaleName, zeroName)
	if err != nil {
		return qparams{}, err
	}
	if len(s) != 1 {
		return qparams{}, fmt.Errorf("scale %q has %d elements: per-axis quantization of a value computed at run time: %w", scaleName, len(s), ErrUnsupported)
	}
	return qparams{scale: s[0], zero: z[0], elem: elem}, nil
}

// operand returns the name of the float value of the quantized input name read with the given
// scale and zero point: the same name for an activation (whose quantization must match), or a
// new float32 initializer for a constant, dequantized along axis (ONNX convention, negative from
// the end) when perAxis and the scale has several elements.
func (c *converter) operand(name, scaleName, zeroName string, axis int, perAxis bool) (string, error) {
	if q, ok := c.quant[name]; ok {
		p, err := c.scalarParams(scaleName, zeroName)
		if err != nil {
			return "", err
		}
		if p.scale != q.scale || p.zero != q.zero {
			return "", fmt.Errorf("tensor %q is read with scale %g, zero point %d but was quantized with scale %g, zero point %d: %w",
				name, p.scale, p.zero, q.scale, q.zero, ErrUnsupported)
		}
		return name, nil
	}
	t, ok := c.consts[name]
	if !ok {
		return "", fmt.Errorf("input %q is neither a constant nor the output of a quantized op this converter knows (a quantized graph input?): %w", name, ErrUnsupported)
	}
	key := fmt.Sprintf("%s\x00%s\x00%s\x00%d\x00%t", name, scaleName, zeroName, axis, perAxis)
	if f, ok := c.dq[key]; ok {
		return f, nil
	}
	scales, zeros, _, err := c.params(scaleName, zeroName)
	if err != nil {
		return "", err
	}
	data, err := c.dequantizeConst(t, name, scales, zeros, axis, perAxis)
	if err != nil {
		return "", err
	}
	base := name + "_float"
	if s, ok := strings.CutSuffix(name, "_quantized"); ok && s != "" {
		base = s
	}
	f := c.fresh(base)
	c.inits = append(c.inits, floatTensor(f, t.Dims, data))
	c.dq[key] = f
	return f, nil
}

func (c *converter) dequantizeConst(t *onnx.TensorProto, name string, scales []float32, zeros []int32, axis int, perAxis bool) ([]float32, error) {
	q, err := tensorInts(t)
	if err != nil {
		return nil, err
	}
	if len(scales) > 1 {
		rank := len(t.Dims)
		if axis < 0 {
			axis += rank
		}
		if !perAxis {
			return nil, fmt.Errorf("constant %q: %d scales where one per tensor is expected: %w", name, len(scales), ErrUnsupported)
		}
		if axis < 0 || axis >= rank || int(t.Dims[axis]) != len(scales) {
			return nil, fmt.Errorf("constant %q of shape %v: %d scales do not match axis %d", name, t.Dims, len(scales), axis)
		}
	}
	data := make([]float32, len(q))
	dequantize(data, q, scales, zeros, t.Dims, axis)
	c.rep.WeightTensors++
	c.rep.WeightElements += len(data)
	return data, nil
}

func (c *converter) fresh(base string) string {
	name := base
	for k := 1; c.names[name]; k++ {
		name = fmt.Sprintf("%s_%d", base, k)
	}
	c.names[name] = true
	return name
}

// emit appends a default-domain node made from the quantized node n.
func (c *converter) emit(n *onnx.NodeProto, name, op string, inputs, outputs []string, attrs []*onnx.AttributeProto) {
	nn := name
	for k := 1; c.nodeNames[nn]; k++ {
		nn = fmt.Sprintf("%s_%d", name, k)
	}
	c.nodeNames[nn] = true
	c.nodes = append(c.nodes, &onnx.NodeProto{
		Name:      nn,
		OpType:    op,
		Input:     inputs,
		Output:    outputs,
		Attribute: attrs,
		DocString: fmt.Sprintf("weights: from %s node %q", n.OpType, n.Name),
	})
}

// clip emits Clip(pre) -> out with the range of the quantization (scaleName, zeroName), and
// records out as a quantized value.
func (c *converter) clip(n *onnx.NodeProto, nodeName, pre, out, scaleName, zeroName string) error {
	p, err := c.scalarParams(scaleName, zeroName)
	if err != nil {
		return err
	}
	qmin, qmax, err := quantRange(p.elem)
	if err != nil {
		return fmt.Errorf("zero point %q: %w", zeroName, err)
	}
	if !(p.scale > 0) || math.IsInf(float64(p.scale), 0) {
		return fmt.Errorf("scale %q is %g, want a positive finite number", scaleName, p.scale)
	}
	lo, hi := float32(qmin-p.zero)*p.scale, float32(qmax-p.zero)*p.scale
	if c.opset >= 11 {
		minName, maxName := c.fresh(out+"_clip_min"), c.fresh(out+"_clip_max")
		c.inits = append(c.inits, floatTensor(minName, nil, []float32{lo}), floatTensor(maxName, nil, []float32{hi}))
		c.emit(n, nodeName, "Clip", []string{pre, minName, maxName}, []string{out}, nil)
	} else {
		c.emit(n, nodeName, "Clip", []string{pre}, []string{out}, []*onnx.AttributeProto{
			{Name: "min", Type: onnx.AttributeProto_FLOAT, F: lo},
			{Name: "max", Type: onnx.AttributeProto_FLOAT, F: hi},
		})
	}
	c.quant[out] = p
	c.rep.Clips++
	return nil
}

// replace emits op(inputs) + Clip for the quantized node n whose output is quantized with
// (scaleName, zeroName).
func (c *converter) replace(n *onnx.NodeProto, op string, inputs []string, attrs []*onnx.AttributeProto, scaleName, zeroName string) error {
	out := n.Output[0]
	pre := c.fresh(out + "_unclipped")
	delete(c.nodeNames, n.Name) // the float op takes over the name of the node it replaces
	c.emit(n, n.Name, op, inputs, []string{pre}, attrs)
	if err := c.clip(n, n.Name+"_clip", pre, out, scaleName, zeroName); err != nil {
		return err
	}
	c.rep.Converted[n.OpType]++
	return nil
}

func (c *converter) quantizeLinear(n *onnx.NodeProto) error {
	if err := checkArity(n, 2, 3, 1); err != nil {
		return err
	}
	x, y := n.Input[0], n.Output[0]
	p, err := c.scalarParams(n.Input[1], input(n, 2))
	if err != nil {
		return err
	}
	if _, ok := c.quant[x]; ok {
		return fmt.Errorf("input %q is already quantized", x)
	}
	if t, ok := c.consts[x]; ok {
		v, err := tensorFloats(t)
		if err != nil {
			return err
		}
		qmin, qmax, err := quantRange(p.elem)
		if err != nil {
			return err
		}
		for i, f := range v {
			q := math.RoundToEven(float64(f/p.scale)) + float64(p.zero)
			q = math.Max(float64(qmin), math.Min(float64(qmax), q))
			v[i] = float32(int32(q)-p.zero) * p.scale
		}
		c.inits = append(c.inits, floatTensor(y, t.Dims, v))
		c.quant[y] = p
		c.rep.WeightTensors++
		c.rep.WeightElements += len(v)
		c.rep.Converted[n.OpType]++
		return nil
	}
	delete(c.nodeNames, n.Name)
	if err := c.clip(n, n.Name, x, y, n.Input[1], input(n, 2)); err != nil {
		return err
	}
	c.rep.Converted[n.OpType]++
	return nil
}

func (c *converter) dequantizeLinear(n *onnx.NodeProto) error {
	if err := checkArity(n, 2, 3, 1); err != nil {
		return err
	}
	x, y := n.Input[0], n.Output[0]
	if _, ok := c.quant[x]; ok {
		f, err := c.operand(x, n.Input[1], input(n, 2), 0, false)
		if err != nil {
			return err
		}
		delete(c.nodeNames, n.Name)
		c.emit(n, n.Name, "Identity", []string{f}, []string{y}, nil)
		c.rep.Converted[n.OpType]++
		return nil
	}
	t, ok := c.consts[x]
	if !ok {
		return fmt.Errorf("input %q is neither a constant nor the output of a quantized op this converter knows: %w", x, ErrUnsupported)
	}
	scales, zeros, _, err := c.params(n.Input[1], input(n, 2))
	if err != nil {
		return err
	}
	data, err := c.dequantizeConst(t, x, scales, zeros, int(attrInt(n, "axis", 1)), true)
	if err != nil {
		return err
	}
	c.inits = append(c.inits, floatTensor(y, t.Dims, data))
	c.rep.Converted[n.OpType]++
	return nil
}

func (c *converter) qlinearConv(n *onnx.NodeProto) error {
	if err := checkArity(n, 8, 9, 1); err != nil {
		return err
	}
	x, err := c.operand(n.Input[0], n.Input[1], n.Input[2], 0, false)
	if err != nil {
		return err
	}
	w, err := c.operand(n.Input[3], n.Input[4], n.Input[5], 0, true)
	if err != nil {
		return err
	}
	inputs := []string{x, w}
	if b := input(n, 8); b != "" {
		xp, err := c.scalarParams(n.Input[1], n.Input[2])
		if err != nil {
			return err
		}
		ws, _, _, err := c.params(n.Input[4], n.Input[5])
		if err != nil {
			return err
		}
		bf, err := c.bias(b, xp.scale, ws)
		if err != nil {
			return err
		}
		inputs = append(inputs, bf)
	}
	return c.replace(n, "Conv", inputs, n.Attribute, n.Input[6], n.Input[7])
}

// bias dequantizes the int32 bias b of a QLinearConv: b[c] * xScale * wScales[c].
func (c *converter) bias(b string, xScale float32, wScales []float32) (string, error) {
	t, ok := c.consts[b]
	if !ok {
		return "", fmt.Errorf("bias %q is not a constant: %w", b, ErrUnsupported)
	}
	if dt := onnx.TensorProto_DataType(t.DataType); dt != onnx.TensorProto_INT32 {
		return "", fmt.Errorf("bias %q has element type %v, want INT32", b, dt)
	}
	q, err := tensorInts(t)
	if err != nil {
		return "", err
	}
	if len(wScales) != 1 && len(wScales) != len(q) {
		return "", fmt.Errorf("bias %q has %d elements for %d weight scales", b, len(q), len(wScales))
	}
	data := make([]float32, len(q))
	for i, v := range q {
		ws := wScales[0]
		if len(wScales) > 1 {
			ws = wScales[i]
		}
		data[i] = float32(float64(v) * float64(xScale) * float64(ws))
	}
	base := b + "_float"
	if s, ok := strings.CutSuffix(b, "_quantized"); ok && s != "" {
		base = s
	}
	f := c.fresh(base)
	c.inits = append(c.inits, floatTensor(f, t.Dims, data))
	c.rep.WeightTensors++
	c.rep.WeightElements += len(data)
	return f, nil
}

func (c *converter) qlinearMatMul(n *onnx.NodeProto) error {
	if err := checkArity(n, 8, 8, 1); err != nil {
		return err
	}
	a, err := c.operand(n.Input[0], n.Input[1], n.Input[2], -2, true) // per row of a
	if err != nil {
		return err
	}
	b, err := c.operand(n.Input[3], n.Input[4], n.Input[5], -1, true) // per column of b
	if err != nil {
		return err
	}
	return c.replace(n, "MatMul", []string{a, b}, nil, n.Input[6], n.Input[7])
}

func (c *converter) qlinearBinary(n *onnx.NodeProto, op string) error {
	if err := checkArity(n, 7, 8, 1); err != nil {
		return err
	}
	a, err := c.operand(n.Input[0], n.Input[1], n.Input[2], 0, false)
	if err != nil {
		return err
	}
	b, err := c.operand(n.Input[3], n.Input[4], n.Input[5], 0, false)
	if err != nil {
		return err
	}
	return c.replace(n, op, []string{a, b}, nil, n.Input[6], input(n, 7))
}

func (c *converter) qlinearGlobalAveragePool(n *onnx.NodeProto) error {
	if err := checkArity(n, 5, 5, 1); err != nil {
		return err
	}
	if attrInt(n, "channels_last", 0) != 0 {
		return fmt.Errorf("channels_last=1: %w", ErrUnsupported)
	}
	x, err := c.operand(n.Input[0], n.Input[1], n.Input[2], 0, false)
	if err != nil {
		return err
	}
	return c.replace(n, "GlobalAveragePool", []string{x}, nil, n.Input[3], n.Input[4])
}

// other keeps a node that is not quantized, checking how it uses quantized values.
func (c *converter) other(n *onnx.NodeProto) error {
	def := isDefaultDomain(n.Domain)
	var first *qparams
	for i, in := range n.Input {
		q, ok := c.quant[in]
		if !ok {
			if def && n.OpType == "Concat" && first != nil {
				return fmt.Errorf("input %q is float, input %q quantized: %w", in, n.Input[0], ErrUnsupported)
			}
			continue
		}
		switch {
		case def && (n.OpType == "Shape" || n.OpType == "Size"):
		case def && passThrough[n.OpType] && i == 0:
			first = &q
		case def && n.OpType == "Concat" && (i == 0 || first != nil && *first == q):
			first = &q
		default:
			return fmt.Errorf("reads quantized tensor %q (input %d) and has no float conversion: %w", in, i, ErrUnsupported)
		}
	}
	if first != nil {
		outs := n.Output[:1]
		if n.OpType == "Split" {
			outs = n.Output
		}
		for _, o := range outs {
			c.quant[o] = *first
		}
		c.rep.PassThrough[n.OpType]++
	}
	c.nodes = append(c.nodes, n)
	return nil
}

// checkSubgraphs rejects quantized ops inside subgraphs (If, Loop, Scan bodies).
func checkSubgraphs(n *onnx.NodeProto) error {
	for _, a := range n.Attribute {
		for _, sg := range append([]*onnx.GraphProto{a.G}, a.Graphs...) {
			if sg == nil {
				continue
			}
			for _, sn := range sg.Node {
				if isQuantizedOp(sn) {
					return fmt.Errorf("subgraph %q holds quantized op %q (node %q): %w", sg.Name, sn.OpType, sn.Name, ErrUnsupported)
				}
				if err := checkSubgraphs(sn); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// collectNames records every tensor name and node name of g and its subgraphs.
func collectNames(g *onnx.GraphProto, names, nodeNames map[string]bool) {
	for _, t := range g.Initializer {
		names[t.Name] = true
	}
	for _, vs := range [][]*onnx.ValueInfoProto{g.Input, g.Output, g.ValueInfo} {
		for _, v := range vs {
			names[v.Name] = true
		}
	}
	for _, n := range g.Node {
		nodeNames[n.Name] = true
		for _, s := range append(append([]string(nil), n.Input...), n.Output...) {
			names[s] = true
		}
		for _, a := range n.Attribute {
			for _, sg := range append([]*onnx.GraphProto{a.G}, a.Graphs...) {
				if sg != nil {
					collectNames(sg, names, nodeNames)
				}
			}
		}
	}
}

// usedNames records every tensor read by the nodes of g (and its subgraphs) or output by g.
func usedNames(g *onnx.GraphProto, used map[string]bool) {
	for _, o := range g.Output {
		used[o.Name] = true
	}
	for _, n := range g.Node {
		for _, in := range n.Input {
			used[in] = true
		}
		for _, a := range n.Attribute {
			for _, sg := range append([]*onnx.GraphProto{a.G}, a.Graphs...) {
				if sg != nil {
					usedNames(sg, used)
				}
			}
		}
	}
}

// prune drops unused Constant nodes and initializers (and graph inputs naming dropped
// initializers).
func (c *converter) prune(g *onnx.GraphProto) {
	used := map[string]bool{}
	usedNames(g, used)
	nodes := g.Node[:0]
	for _, n := range g.Node {
		if n.OpType == "Constant" && isDefaultDomain(n.Domain) && len(n.Output) == 1 && !used[n.Output[0]] {
			continue
		}
		nodes = append(nodes, n)
	}
	g.Node = nodes
	dropped := map[string]bool{}
	inits := g.Initializer[:0]
	for _, t := range g.Initializer {
		if !used[t.Name] {
			dropped[t.Name] = true
			continue
		}
		inits = append(inits, t)
	}
	g.Initializer = inits
	c.rep.DroppedInitializers = len(dropped)
	ins := g.Input[:0]
	for _, in := range g.Input {
		if !dropped[in.Name] {
			ins = append(ins, in)
		}
	}
	g.Input = ins
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
