package export

import (
	"fmt"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// Branches applies every branch (a list of layers, like a head) to the same [batch, D] input,
// L2-normalizes each branch's output (LpNormalization p=2, axis=1) and concatenates them along
// the feature axis (Concat axis=1): the output is [batch, sum of the branch widths], float32.
//
// A head ending with Branches of k heads exports a naive ensemble: after the model's final
// L2 normalization the embedding is the concatenation of the k unit-norm branch embeddings,
// divided by sqrt(k). Layers shared by every branch (FlipAverage, Center, L2Normalize of the
// features) belong before the Branches layer, where they run once; FlipAverage is not allowed
// inside a branch. A branch with no layers passes the (normalized) input through. At least one
// branch is required; branches may nest.
type Branches [][]Layer

func (Branches) layer() {}

// emitBranches appends the nodes of b to g, reading the [batch, dim] tensor cur; node and tensor
// names start with base; errors name the layer as what. It returns the concatenated output and
// its width.
func emitBranches(g *onnx.GraphProto, b Branches, base, what, cur string, dim int) (string, int, error) {
	if len(b) == 0 {
		return "", 0, fmt.Errorf("export: %s has no branches", what)
	}
	outs := make([]string, len(b))
	total := 0
	for k, branch := range b {
		prefix := fmt.Sprintf("%s.b%d", base, k)
		out, w, err := emitLayers(g, branch, prefix, fmt.Sprintf("%s branch %d layer", what, k), cur, dim)
		if err != nil {
			return "", 0, err
		}
		outs[k] = prefix + ".norm"
		g.Node = append(g.Node, onnxpb.Node("LpNormalization", prefix+".l2", []string{out}, []string{outs[k]},
			onnxpb.AttrInt("axis", 1), onnxpb.AttrInt("p", 2)))
		total += w
	}
	out := base + ".out"
	g.Node = append(g.Node, onnxpb.Node("Concat", base+".concat", outs, []string{out}, onnxpb.AttrInt("axis", 1)))
	return out, total, nil
}
