package weights

import (
	"fmt"
	"sort"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"
)

// Fold names, by node name, a BatchNormalization node folded into the Conv node that feeds it
// (as backbone/graph.Decode does: the Conv's weight becomes W·s and its bias (B − mean)·s + β,
// s = γ/sqrt(var + ε)). A node without a name is named by its first output, as in
// backbone/graph.
type Fold struct{ Conv, BatchNorm string }

// WriteBack returns a copy of the float model m with new values for some of its float32
// initializers, e.g. fine-tuned weights of a backbone's last blocks; m is not modified.
// values maps an initializer name to its new float32 values, row-major, as many as the
// initializer has (its dims are kept).
//
// Each Fold makes the model compute what a graph with that BatchNormalization folded computes:
// the BatchNormalization node is removed, the Conv writes the BatchNormalization's output tensor,
// and values must hold the folded Conv weight under the Conv's weight name and the folded bias
// under the Conv's bias name, or, for a Conv without a bias, under the BatchNormalization's bias
// name suffixed "_folded" or, failing that, the bias name itself (backbone/graph's naming). The
// Conv then reads that bias (a new initializer [M] when the name is new). Initializers that only
// the removed nodes read are dropped.
//
// Errors name the tensor or node: a value for a tensor that is not a float32 initializer, a
// wrong number of values, a Fold whose nodes are missing, not a Conv followed by a
// BatchNormalization that alone reads the Conv's output, or without the folded values.
func WriteBack(m *onnx.ModelProto, values map[string][]float32, folds []Fold) (*onnx.ModelProto, error) {
	if m == nil || m.Graph == nil {
		return nil, fmt.Errorf("weights: write back: model has no graph")
	}
	out := proto.Clone(m).(*onnx.ModelProto)
	g := out.Graph
	byName := map[string]*onnx.NodeProto{}
	for _, n := range g.Node {
		byName[nodeName(n)] = n
	}
	inits := map[string]int{}
	for i, t := range g.Initializer {
		inits[t.Name] = i
	}
	listsInits := false // IR < 4 models list initializers among the graph inputs
	for _, in := range g.Input {
		if _, ok := inits[in.Name]; ok {
			listsInits = true
		}
	}
	removed := map[*onnx.NodeProto]bool{}
	released := map[string]bool{} // inputs of removed nodes
	gone := map[string]bool{}     // the Convs' old outputs
	for _, f := range folds {
		conv, bn := byName[f.Conv], byName[f.BatchNorm]
		switch {
		case conv == nil || conv.OpType != "Conv" || !isDefaultDomain(conv.Domain):
			return nil, fmt.Errorf("weights: write back: fold %q <- %q: no Conv node %q in the graph", f.Conv, f.BatchNorm, f.Conv)
		case bn == nil || bn.OpType != "BatchNormalization" || !isDefaultDomain(bn.Domain) || len(bn.Input) != 5:
			return nil, fmt.Errorf("weights: write back: fold %q <- %q: no BatchNormalization node %q with 5 inputs in the graph", f.Conv, f.BatchNorm, f.BatchNorm)
		case removed[bn]:
			return nil, fmt.Errorf("weights: write back: BatchNormalization %q is folded twice", f.BatchNorm)
		case len(conv.Input) < 2 || len(conv.Output) != 1 || bn.Input[0] != conv.Output[0]:
			return nil, fmt.Errorf("weights: write back: fold %q <- %q: the BatchNormalization does not read the Conv's output", f.Conv, f.BatchNorm)
		}
		if readers := readersOf(g, conv.Output[0]); readers != 1 {
			return nil, fmt.Errorf("weights: write back: fold %q <- %q: the Conv's output %q is read %d times (graph outputs included); only the BatchNormalization may read it",
				f.Conv, f.BatchNorm, conv.Output[0], readers)
		}
		w := conv.Input[1]
		if _, ok := values[w]; !ok {
			return nil, fmt.Errorf("weights: write back: fold %q <- %q: no folded value for the Conv weight %q", f.Conv, f.BatchNorm, w)
		}
		var bias string
		if len(conv.Input) > 2 && conv.Input[2] != "" {
			bias = conv.Input[2]
			if _, ok := values[bias]; !ok {
				return nil, fmt.Errorf("weights: write back: fold %q <- %q: no folded value for the Conv bias %q", f.Conv, f.BatchNorm, bias)
			}
		} else {
			for _, name := range []string{bn.Input[2] + "_folded", bn.Input[2]} {
				if _, ok := values[name]; ok {
					bias = name
					break
				}
			}
			if bias == "" {
				return nil, fmt.Errorf("weights: write back: fold %q <- %q: no folded bias (want a value for %q or %q)", f.Conv, f.BatchNorm, bn.Input[2]+"_folded", bn.Input[2])
			}
			if _, ok := inits[bias]; !ok {
				g.Initializer = append(g.Initializer, floatTensor(bias, []int64{int64(len(values[bias]))}, values[bias]))
				inits[bias] = len(g.Initializer) - 1
				if listsInits {
					g.Input = append(g.Input, valueInfo(bias, int64(len(values[bias]))))
				}
			}
			conv.Input = append(conv.Input[:2], bias)
		}
		for _, in := range bn.Input[1:] {
			released[in] = true
		}
		gone[conv.Output[0]] = true
		conv.Output[0] = bn.Output[0]
		removed[bn] = true
	}
	if len(removed) > 0 {
		nodes := g.Node[:0]
		for _, n := range g.Node {
			if !removed[n] {
				nodes = append(nodes, n)
			}
		}
		g.Node = nodes
	}
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		v := values[name]
		i, ok := inits[name]
		if !ok {
			return nil, fmt.Errorf("weights: write back: %q is not an initializer of the model", name)
		}
		t := g.Initializer[i]
		if t.DataType != int32(onnx.TensorProto_FLOAT) {
			return nil, fmt.Errorf("weights: write back: initializer %q has element type %s, want float32", name, onnx.TensorProto_DataType(t.DataType))
		}
		n, err := numElements(t.Dims)
		if err != nil {
			return nil, fmt.Errorf("weights: write back: initializer %q: %w", name, err)
		}
		if n != len(v) {
			return nil, fmt.Errorf("weights: write back: initializer %q has %d values (dims %v), got %d", name, n, t.Dims, len(v))
		}
		g.Initializer[i] = floatTensor(name, t.Dims, v)
		g.Initializer[i].DocString = t.DocString
	}
	if len(released) > 0 {
		used := map[string]bool{}
		usedNames(g, used)
		dropped := map[string]bool{}
		kept := g.Initializer[:0]
		for _, t := range g.Initializer {
			if released[t.Name] && !used[t.Name] {
				dropped[t.Name] = true
				continue
			}
			kept = append(kept, t)
		}
		g.Initializer = kept
		ins := g.Input[:0]
		for _, in := range g.Input {
			if !dropped[in.Name] {
				ins = append(ins, in)
			}
		}
		g.Input = ins
	}
	// Value infos of the Convs' old outputs would be dangling.
	vis := g.ValueInfo[:0]
	for _, vi := range g.ValueInfo {
		if !gone[vi.Name] {
			vis = append(vis, vi)
		}
	}
	g.ValueInfo = vis
	return out, nil
}

// nodeName is a node's name, or its first output when it has none (backbone/graph's naming).
func nodeName(n *onnx.NodeProto) string {
	if n.Name != "" {
		return n.Name
	}
	if len(n.Output) > 0 {
		return n.Output[0]
	}
	return ""
}

// readersOf counts the node inputs (subgraphs included) and graph outputs that read tensor t.
func readersOf(g *onnx.GraphProto, t string) int {
	c := 0
	for _, o := range g.Output {
		if o.Name == t {
			c++
		}
	}
	var walk func(g *onnx.GraphProto)
	walk = func(g *onnx.GraphProto) {
		for _, n := range g.Node {
			for _, in := range n.Input {
				if in == t {
					c++
				}
			}
			for _, a := range n.Attribute {
				for _, sg := range append([]*onnx.GraphProto{a.G}, a.Graphs...) {
					if sg != nil {
						walk(sg)
					}
				}
			}
		}
	}
	walk(g)
	return c
}

// valueInfo is a float32 tensor value info of the given dims.
func valueInfo(name string, dims ...int64) *onnx.ValueInfoProto {
	shape := &onnx.TensorShapeProto{}
	for _, d := range dims {
		shape.Dim = append(shape.Dim, &onnx.TensorShapeProto_Dimension{Value: &onnx.TensorShapeProto_Dimension_DimValue{DimValue: d}})
	}
	return &onnx.ValueInfoProto{Name: name, Type: &onnx.TypeProto{Value: &onnx.TypeProto_TensorType{
		TensorType: &onnx.TypeProto_Tensor{ElemType: int32(onnx.TensorProto_FLOAT), Shape: shape}}}}
}
