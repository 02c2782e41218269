package weights

import (
	"errors"
	"fmt"
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
