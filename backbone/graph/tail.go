package graph

import (
	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/internal/onnxpb"
)

// TailCutPoints returns the input tensors of the model's inverted-residual blocks (MobileNetV2
// style: optional 1×1 expansion Conv, depthwise Conv, 1×1 projection Conv, optional residual
// Add), last block first: element K−1 is the From for training the last K blocks (the graph
// from it to the pooled features then holds those K blocks and whatever follows them, e.g. the
// final 1×1 Conv and GlobalAveragePool). A block is found from its depthwise Conv (group > 1,
// one input channel per group); its input is the input of the 1×1 Conv that feeds the
// depthwise Conv through activations (Clip, Relu, BatchNormalization, Identity), or the
// depthwise Conv's own input when there is no expansion. Only tensors that alone carry
// everything computed after them are returned. Nil when the model has no such blocks.
func TailCutPoints(m *onnx.ModelProto) []string {
	g := m.GetGraph()
	if g == nil {
		return nil
	}
	prod := onnxpb.Producers(g)
	inits := onnxpb.Initializers(g)
	consts := map[string]bool{}
	for name := range inits {
		consts[name] = true
	}
	for _, n := range g.GetNode() {
		if n.GetOpType() == "Constant" {
			for _, o := range n.GetOutput() {
				consts[o] = true
			}
		}
	}
	isConv := func(n *onnx.NodeProto) bool {
		return n != nil && n.GetOpType() == "Conv" && (n.GetDomain() == "" || n.GetDomain() == "ai.onnx") && len(n.GetInput()) > 1
	}
	weightDims := func(n *onnx.NodeProto) []int64 {
		if w := inits[n.GetInput()[1]]; w != nil {
			return w.GetDims()
		}
		return nil
	}
	passThrough := map[string]bool{"Clip": true, "Relu": true, "BatchNormalization": true, "Identity": true, "Dropout": true}
	var points []string
	seen := map[string]bool{}
	for _, n := range g.GetNode() {
		if !isConv(n) || onnxpb.AttrIntOr(n, "group", 1) <= 1 {
			continue
		}
		if d := weightDims(n); len(d) != 4 || d[1] != 1 {
			continue
		}
		in := n.GetInput()[0]
		t := in
		for {
			p := prod[t]
			if p != nil && passThrough[p.GetOpType()] && len(p.GetInput()) > 0 {
				t = p.GetInput()[0]
				continue
			}
			if isConv(p) && onnxpb.AttrIntOr(p, "group", 1) == 1 {
				if d := weightDims(p); len(d) == 4 && d[2] == 1 && d[3] == 1 {
					in = p.GetInput()[0]
				}
			}
			break
		}
		if !seen[in] && isSeparator(g, in, consts) {
			seen[in] = true
			points = append(points, in)
		}
	}
	for i, j := 0, len(points)-1; i < j; i, j = i+1, j-1 {
		points[i], points[j] = points[j], points[i]
	}
	return points
}

// isSeparator reports whether every node downstream of t reads only t, tensors computed from
// t, and constants.
func isSeparator(g *onnx.GraphProto, t string, consts map[string]bool) bool {
	down := map[string]bool{t: true}
	for _, n := range g.GetNode() { // topological order
		reads := false
		for _, in := range n.GetInput() {
			if down[in] {
				reads = true
			}
		}
		if !reads {
			continue
		}
		for _, in := range n.GetInput() {
			if in != "" && !down[in] && !consts[in] {
				return false
			}
		}
		for _, o := range n.GetOutput() {
			down[o] = true
		}
	}
	return true
}
