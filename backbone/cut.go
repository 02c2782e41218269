package backbone

import (
	"fmt"
	"strconv"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// OutputName is the name of the single output of a cut model: float32 [batch, D].
const OutputName = "features"

// BatchDim is the dim_param of the dynamic batch axis in cut and exported models.
const BatchDim = "batch"

// CutInfo describes a model cut by Cut.
type CutInfo struct {
	Feature    string // source tensor the features come from
	Dim        int    // D, the feature size per sample
	Quantized  bool   // the source tensor was uint8/int8 and a DequantizeLinear was added
	Scale      string // quantization scale tensor ("" when not quantized)
	ZeroPoint  string // quantization zero-point tensor ("" when absent)
	InputName  string // name of the single float32 input [batch, C, H, W]
	InputShape [3]int // C, H, W
	Nodes      int    // nodes kept from the source graph
	Added      int    // nodes added after the feature tensor (DequantizeLinear, Flatten, Identity)
}

// FeatureError reports a feature tensor that cannot be cut out of a model.
type FeatureError struct {
	Model      string // file name, or `graph "name"` when the file is unknown
	Tensor     string // requested tensor ("" for the automatic choice)
	Reason     string // e.g. "is not produced by any node"
	Candidates []Candidate
}

func (e *FeatureError) Error() string {
	t := "automatic feature tensor"
	if e.Tensor != "" {
		t = "feature tensor " + strconv.Quote(e.Tensor)
	}
	return fmt.Sprintf("backbone: %s %s in %s; candidates: %s", t, e.Reason, e.Model, candidateNames(e.Candidates))
}

// Cut returns a new model that computes the feature tensor (the automatic choice when feature
// is "") from the model's image input and nothing else. The result has one float32 input
// [batch, C, H, W] (the source input's name) and one float32 output "features" [batch, D], with
// a dynamic batch axis named "batch". A quantized (uint8/int8) feature tensor gets a
// DequantizeLinear with its scale and zero point; a [N, C, 1, 1] tensor gets a Flatten. Nodes
// not needed for the feature are dropped and so is all value_info (which may pin batch=1);
// Reshape targets that hard-code batch 1 are rewritten to copy the batch. m is not modified.
func Cut(m *onnx.ModelProto, feature string) (*onnx.ModelProto, *CutInfo, error) {
	if m.GetGraph() == nil {
		return nil, nil, fmt.Errorf("backbone: cut: model has no graph")
	}
	where := "graph " + strconv.Quote(m.GetGraph().GetName())
	a := analyze(m.GetGraph())
	fail := func(reason string) error {
		return &FeatureError{Model: where, Tensor: feature, Reason: reason, Candidates: a.candidates}
	}
	if feature == "" {
		if a.auto == "" {
			return nil, nil, fail("cannot be chosen: no pooled tensor or final classifier found")
		}
		feature = a.auto
	}
	producer := a.producers[feature]
	if producer == nil {
		return nil, nil, fail("is not produced by any node")
	}
	c := a.candidate(feature, producer, "")
	for _, known := range a.candidates {
		if known.Tensor == feature {
			c = known
		}
	}
	if c.Quantized && c.Scale == "" {
		return nil, nil, fail("is quantized but its scale is unknown")
	}
	if t := a.elemTypes[feature]; !c.Quantized && t != 0 && t != onnxpb.Float {
		return nil, nil, fail("has element type " + onnxpb.DTypeName(t) + ", want float32 or quantized uint8/int8")
	}
	shape := c.Shape
	if shape == nil && c.Quantized {
		// A quantized reshape chain keeps the values; fall back to the classifier's view.
		shape = a.classifierInputShape(feature)
	}
	if len(shape) < 2 || prod(shape[1:]) <= 0 {
		return nil, nil, fail(fmt.Sprintf("has a shape that cannot be inferred (%v)", shape))
	}
	if prod(shape[1:]) > onnxpb.MaxTensorElements {
		return nil, nil, fail(fmt.Sprintf("has %d values per sample (shape %v), more than onnxpb.MaxTensorElements", prod(shape[1:]), shape))
	}
	dim := int(prod(shape[1:]))

	out := onnxpb.Clone(m)
	g := out.Graph
	names := onnxpb.Names(g)
	if names[OutputName] {
		// Free the name "features" for the output.
		renamed := onnxpb.UniqueName(names, OutputName+"_src")
		onnxpb.Rename(g, OutputName, renamed)
		names[renamed] = true
		if feature == OutputName {
			feature = renamed
		}
		if c.Scale == OutputName {
			c.Scale = renamed
		}
		if c.ZeroPoint == OutputName {
			c.ZeroPoint = renamed
		}
	}

	// Steps after the feature tensor; the last one outputs "features".
	var steps []*onnx.NodeProto
	cur := feature
	if c.Quantized {
		in := []string{cur, c.Scale}
		if c.ZeroPoint != "" {
			in = append(in, c.ZeroPoint)
		}
		next := onnxpb.UniqueName(names, feature+"_dequantized")
		names[next] = true
		steps = append(steps, onnxpb.Node("DequantizeLinear", onnxpb.UniqueName(names, "features_dequantize"), in, []string{next}))
		cur = next
	}
	if len(shape) != 2 {
		next := onnxpb.UniqueName(names, feature+"_flat")
		names[next] = true
		steps = append(steps, onnxpb.Node("Flatten", onnxpb.UniqueName(names, "features_flatten"), []string{cur}, []string{next},
			onnxpb.AttrInt("axis", 1)))
		cur = next
	}
	if len(steps) == 0 {
		steps = append(steps, onnxpb.Node("Identity", onnxpb.UniqueName(names, "features_identity"), []string{cur}, []string{OutputName}))
	} else {
		steps[len(steps)-1].Output[0] = OutputName
	}
	g.Node = append(g.Node, steps...)

	// Keep what "features" depends on.
	producers := onnxpb.Producers(g)
	needed := map[string]bool{}
	keepNode := map[*onnx.NodeProto]bool{}
	stack := []string{OutputName}
	for len(stack) > 0 {
		t := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if t == "" || needed[t] {
			continue
		}
		needed[t] = true
		n := producers[t]
		if n == nil || keepNode[n] {
			continue
		}
		keepNode[n] = true
		stack = append(stack, nodeDeps(n)...)
	}
	var nodes []*onnx.NodeProto
	for _, n := range g.Node {
		if keepNode[n] {
			nodes = append(nodes, n)
		}
	}
	g.Node = nodes
	var inits []*onnx.TensorProto
	for _, t := range g.Initializer {
		if needed[t.GetName()] {
			inits = append(inits, t)
		}
	}
	g.Initializer = inits
	var sparse []*onnx.SparseTensorProto
	for _, t := range g.SparseInitializer {
		if needed[t.GetValues().GetName()] {
			sparse = append(sparse, t)
		}
	}
	g.SparseInitializer = sparse

	initNames := onnxpb.Initializers(g)
	var realIn *onnx.ValueInfoProto
	var inputs []*onnx.ValueInfoProto
	for _, vi := range g.Input {
		if !needed[vi.GetName()] {
			continue
		}
		if _, isInit := initNames[vi.GetName()]; isInit {
			inputs = append(inputs, vi) // IR < 4 lists initializers as inputs
			continue
		}
		if realIn != nil {
			return nil, nil, fail(fmt.Sprintf("depends on more than one graph input (%q and %q)", realIn.GetName(), vi.GetName()))
		}
		realIn = vi
	}
	if realIn == nil {
		return nil, nil, fail("does not depend on any graph input")
	}
	if t := onnxpb.ElemType(realIn); t != onnxpb.Float {
		return nil, nil, fail(fmt.Sprintf("depends on input %q of type %s, want float32", realIn.GetName(), onnxpb.DTypeName(t)))
	}
	dims, _, ok := onnxpb.Shape(realIn)
	if !ok || len(dims) != 4 || dims[1] <= 0 || dims[2] <= 0 || dims[3] <= 0 {
		return nil, nil, fail(fmt.Sprintf("depends on input %q of shape %v, want [batch, C, H, W] with fixed C, H, W",
			realIn.GetName(), dims))
	}
	g.Input = append([]*onnx.ValueInfoProto{
		onnxpb.ValueInfo(realIn.GetName(), onnxpb.Float, BatchDim, dims[1], dims[2], dims[3]),
	}, inputs...)
	g.Output = []*onnx.ValueInfoProto{onnxpb.ValueInfo(OutputName, onnxpb.Float, BatchDim, dim)}
	g.ValueInfo = nil
	if err := unpinReshapes(g); err != nil {
		return nil, nil, fmt.Errorf("backbone: cut %s: %w", where, err)
	}

	info := &CutInfo{
		Feature:    feature,
		Dim:        dim,
		Quantized:  c.Quantized,
		InputName:  realIn.GetName(),
		InputShape: [3]int{int(dims[1]), int(dims[2]), int(dims[3])},
		Nodes:      len(g.Node) - len(steps),
		Added:      len(steps),
	}
	if c.Quantized {
		info.Scale, info.ZeroPoint = c.Scale, c.ZeroPoint
	}
	return out, info, nil
}

// nodeDeps returns the tensors a node reads, including outer-scope names used by subgraphs.
func nodeDeps(n *onnx.NodeProto) []string {
	deps := append([]string(nil), n.GetInput()...)
	for _, a := range n.GetAttribute() {
		graphs := a.GetGraphs()
		if a.GetG() != nil {
			graphs = append(graphs, a.GetG())
		}
		for _, sg := range graphs {
			for _, sn := range sg.GetNode() {
				deps = append(deps, nodeDeps(sn)...)
			}
		}
	}
	return deps
}

// unpinReshapes rewrites constant Reshape targets whose first entry is 1 (a batch of one baked
// in by the exporter) to 0, which copies the batch from the input.
func unpinReshapes(g *onnx.GraphProto) error {
	inits := onnxpb.Initializers(g)
	consumers := onnxpb.Consumers(g)
	names := onnxpb.Names(g)
	for _, n := range g.GetNode() {
		if n.GetOpType() != "Reshape" || len(n.GetInput()) < 2 || onnxpb.AttrIntOr(n, "allowzero", 0) == 1 {
			continue
		}
		t, ok := inits[n.GetInput()[1]]
		if !ok {
			continue
		}
		target, err := onnxpb.Int64s(t)
		if err != nil {
			return fmt.Errorf("reshape node %q: %w", n.GetName(), err)
		}
		if len(target) == 0 || target[0] != 1 {
			continue
		}
		target[0] = 0
		name := t.GetName()
		if len(consumers[name]) > 1 {
			name = onnxpb.UniqueName(names, name+"_batch")
			names[name] = true
			n.Input[1] = name
			g.Initializer = append(g.Initializer, onnxpb.Int64Tensor(name, t.GetDims(), target))
			continue
		}
		t.DataType, t.RawData, t.Int32Data, t.Int64Data = onnxpb.Int64, nil, nil, target
	}
	return nil
}
