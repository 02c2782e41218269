package onnxpb

import (
	"fmt"
	"strconv"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

// Node builds a NodeProto in the default (ai.onnx) domain.
func Node(op, name string, in, out []string, attrs ...*onnx.AttributeProto) *onnx.NodeProto {
	return &onnx.NodeProto{
		OpType:    op,
		Name:      name,
		Input:     append([]string(nil), in...),
		Output:    append([]string(nil), out...),
		Attribute: attrs,
	}
}

// AttrInt builds an INT attribute.
func AttrInt(name string, v int64) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_INT, I: v}
}

// AttrFloat builds a FLOAT attribute.
func AttrFloat(name string, v float32) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_FLOAT, F: v}
}

// AttrInts builds an INTS attribute.
func AttrInts(name string, v ...int64) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_INTS, Ints: append([]int64(nil), v...)}
}

// AttrString builds a STRING attribute.
func AttrString(name, v string) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_STRING, S: []byte(v)}
}

// Attr returns the node's attribute with the given name, or nil.
func Attr(n *onnx.NodeProto, name string) *onnx.AttributeProto {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return a
		}
	}
	return nil
}

// AttrIntOr returns the node's INT attribute name, or def when absent.
func AttrIntOr(n *onnx.NodeProto, name string, def int64) int64 {
	if a := Attr(n, name); a != nil {
		return a.GetI()
	}
	return def
}

// ValueInfo builds a tensor ValueInfoProto. Each dim is an int or int64 (a fixed size, dim_value)
// or a string (a symbolic, dynamic size, dim_param); any other type panics (a programmer bug).
// With no dims the shape is a scalar; use ValueInfoNoShape for an unknown shape.
func ValueInfo(name string, elemType int32, dims ...any) *onnx.ValueInfoProto {
	shape := &onnx.TensorShapeProto{Dim: make([]*onnx.TensorShapeProto_Dimension, len(dims))}
	for i, d := range dims {
		var dim onnx.TensorShapeProto_Dimension
		switch v := d.(type) {
		case int:
			dim.Value = &onnx.TensorShapeProto_Dimension_DimValue{DimValue: int64(v)}
		case int64:
			dim.Value = &onnx.TensorShapeProto_Dimension_DimValue{DimValue: v}
		case string:
			dim.Value = &onnx.TensorShapeProto_Dimension_DimParam{DimParam: v}
		default:
			panic(fmt.Sprintf("onnxpb: ValueInfo %q: dim %d has type %T, want int, int64 or string", name, i, d))
		}
		shape.Dim[i] = &dim
	}
	return &onnx.ValueInfoProto{
		Name: name,
		Type: &onnx.TypeProto{Value: &onnx.TypeProto_TensorType{
			TensorType: &onnx.TypeProto_Tensor{ElemType: elemType, Shape: shape},
		}},
	}
}

// ElemType returns the element type of a tensor value info (0 when unknown).
func ElemType(vi *onnx.ValueInfoProto) int32 {
	return vi.GetType().GetTensorType().GetElemType()
}

// Shape returns the dims of a tensor value info: dims[i] is the fixed size, or -1 when the
// axis is dynamic, in which case params[i] holds its symbolic name (possibly ""). ok is false
// when the value info has no shape.
func Shape(vi *onnx.ValueInfoProto) (dims []int64, params []string, ok bool) {
	sh := vi.GetType().GetTensorType().GetShape()
	if sh == nil {
		return nil, nil, false
	}
	dims = make([]int64, len(sh.GetDim()))
	params = make([]string, len(sh.GetDim()))
	for i, d := range sh.GetDim() {
		if v, isVal := d.GetValue().(*onnx.TensorShapeProto_Dimension_DimValue); isVal && v.DimValue > 0 {
			dims[i] = v.DimValue
			continue
		}
		dims[i] = -1
		params[i] = d.GetDimParam()
	}
	return dims, params, true
}

// Initializers indexes the graph's initializers by name.
func Initializers(g *onnx.GraphProto) map[string]*onnx.TensorProto {
	m := make(map[string]*onnx.TensorProto, len(g.GetInitializer()))
	for _, t := range g.GetInitializer() {
		m[t.GetName()] = t
	}
	return m
}

// Producers indexes the graph's nodes by the names of the tensors they output.
func Producers(g *onnx.GraphProto) map[string]*onnx.NodeProto {
	m := make(map[string]*onnx.NodeProto)
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			if o != "" {
				m[o] = n
			}
		}
	}
	return m
}

// Consumers indexes the graph's nodes by the names of the tensors they read.
func Consumers(g *onnx.GraphProto) map[string][]*onnx.NodeProto {
	m := make(map[string][]*onnx.NodeProto)
	for _, n := range g.GetNode() {
		for _, in := range n.GetInput() {
			if in != "" {
				m[in] = append(m[in], n)
			}
		}
	}
	return m
}

// RealInputs returns the graph inputs that are not initializers (older models list their
// weights as inputs too).
func RealInputs(g *onnx.GraphProto) []*onnx.ValueInfoProto {
	inits := Initializers(g)
	var out []*onnx.ValueInfoProto
	for _, in := range g.GetInput() {
		if _, isInit := inits[in.GetName()]; !isInit {
			out = append(out, in)
		}
	}
	return out
}

// SetMetadata sets (or replaces) a metadata_props entry of m.
func SetMetadata(m *onnx.ModelProto, key, value string) {
	for _, p := range m.GetMetadataProps() {
		if p.GetKey() == key {
			p.Value = value
			return
		}
	}
	m.MetadataProps = append(m.MetadataProps, &onnx.StringStringEntryProto{Key: key, Value: value})
}

// Rename renames the tensor old to new everywhere in g: node inputs and outputs, graph inputs,
// outputs, value_info and initializers, and references from subgraphs (If/Loop bodies) that
// do not shadow it. The caller makes sure new is not already used.
func Rename(g *onnx.GraphProto, old, new string) {
	if old == new {
		return
	}
	for _, n := range g.GetNode() {
		for i, in := range n.Input {
			if in == old {
				n.Input[i] = new
			}
		}
		for i, o := range n.Output {
			if o == old {
				n.Output[i] = new
			}
		}
		for _, a := range n.GetAttribute() {
			if a.G != nil {
				renameOuter(a.G, old, new)
			}
			for _, sg := range a.Graphs {
				renameOuter(sg, old, new)
			}
		}
	}
	for _, lists := range [][]*onnx.ValueInfoProto{g.Input, g.Output, g.ValueInfo} {
		for _, vi := range lists {
			if vi.Name == old {
				vi.Name = new
			}
		}
	}
	for _, t := range g.Initializer {
		if t.Name == old {
			t.Name = new
		}
	}
}

// renameOuter renames references to an outer-scope tensor inside a subgraph, unless the
// subgraph defines a tensor of the same name (which shadows it).
func renameOuter(g *onnx.GraphProto, old, new string) {
	for _, vi := range g.GetInput() {
		if vi.GetName() == old {
			return
		}
	}
	for _, t := range g.GetInitializer() {
		if t.GetName() == old {
			return
		}
	}
	if _, shadowed := Producers(g)[old]; shadowed {
		return
	}
	Rename(g, old, new)
}

// Names returns every tensor name used in g (node inputs and outputs, graph inputs, outputs,
// initializers and value_info).
func Names(g *onnx.GraphProto) map[string]bool {
	m := make(map[string]bool)
	for _, n := range g.GetNode() {
		for _, s := range n.GetInput() {
			m[s] = true
		}
		for _, s := range n.GetOutput() {
			m[s] = true
		}
	}
	for _, lists := range [][]*onnx.ValueInfoProto{g.GetInput(), g.GetOutput(), g.GetValueInfo()} {
		for _, vi := range lists {
			m[vi.GetName()] = true
		}
	}
	for _, t := range g.GetInitializer() {
		m[t.GetName()] = true
	}
	delete(m, "")
	return m
}

// OpsetVersion returns the model's opset version for a domain ("" or "ai.onnx" for the default
// domain), or 0 when the domain is not imported.
func OpsetVersion(m *onnx.ModelProto, domain string) int64 {
	if domain == "ai.onnx" {
		domain = ""
	}
	for _, o := range m.GetOpsetImport() {
		d := o.GetDomain()
		if d == "ai.onnx" {
			d = ""
		}
		if d == domain {
			return o.GetVersion()
		}
	}
	return 0
}

// ValueInfoNoShape builds a tensor ValueInfoProto of unknown shape (e.g. an intermediate tensor
// declared as an extra graph output).
func ValueInfoNoShape(name string, elemType int32) *onnx.ValueInfoProto {
	return &onnx.ValueInfoProto{
		Name: name,
		Type: &onnx.TypeProto{Value: &onnx.TypeProto_TensorType{
			TensorType: &onnx.TypeProto_Tensor{ElemType: elemType},
		}},
	}
}

// UniqueName returns base, or base_N with the smallest N >= 1, whichever is not in used: the
// name of a node or tensor added to a graph whose names are used.
func UniqueName(used map[string]bool, base string) string {
	if !used[base] {
		return base
	}
	for i := 1; ; i++ {
		s := base + "_" + strconv.Itoa(i)
		if !used[s] {
			return s
		}
	}
}
