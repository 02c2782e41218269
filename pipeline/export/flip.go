package export

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// MetaFlipTTA is the metadata key saying whether the model runs the mirror pass ("true"/"false").
const MetaFlipTTA = "flip_tta"

// flipSuffixes name the nodes addFlipAverage adds after its base ("<prefix>.flip").
var flipSuffixes = []string{".slice", ".concat", ".reshape", ".reduce"}

// HasFlip reports whether an exported model averages each image with its mirror (FlipAverage).
func HasFlip(m *onnx.ModelProto) bool { return flipBase(m.GetGraph()) != "" }

// flipBase returns the "<prefix>.flip" base of the graph's FlipAverage nodes, or "".
func flipBase(g *onnx.GraphProto) string {
	for _, n := range g.GetNode() {
		if base, ok := strings.CutSuffix(n.GetName(), ".flip.slice"); ok && n.GetOpType() == "Slice" {
			return base + ".flip"
		}
	}
	return ""
}

// SetFlip returns a copy of the exported model m with the mirror pass (FlipAverage) added or
// removed; everything else, quantization included, is kept. The metadata's MetaFlipTTA is updated.
func SetFlip(m *onnx.ModelProto, on bool) (*onnx.ModelProto, error) {
	out := onnxpb.Clone(m)
	g := out.Graph
	base := flipBase(g)
	switch {
	case on && base == "":
		if err := addFlip(out); err != nil {
			return nil, err
		}
	case !on && base != "":
		removeFlip(g, base)
	}
	onnxpb.SetMetadata(out, MetaFlipTTA, strconv.FormatBool(on))
	return out, nil
}

// removeFlip drops the FlipAverage nodes named base.*: the backbone reads the images again and
// the head the backbone's features.
func removeFlip(g *onnx.GraphProto, base string) {
	drop := map[string]bool{}
	for _, s := range flipSuffixes {
		drop[base+s] = true
	}
	rename := map[string]string{}
	var keep []*onnx.NodeProto
	for _, n := range g.Node {
		if !drop[n.GetName()] {
			keep = append(keep, n)
			continue
		}
		switch n.GetName() {
		case base + ".concat": // [images; mirror] -> images
			rename[n.Output[0]] = n.Input[0]
		case base + ".reduce": // mean of the pairs -> the features
			rename[n.Output[0]] = backbone.OutputName
		}
	}
	for _, n := range keep {
		for i, in := range n.Input {
			if to, ok := rename[in]; ok {
				n.Input[i] = to
			}
		}
	}
	g.Node = keep
	var inits []*onnx.TensorProto
	for _, t := range g.Initializer {
		if !strings.HasPrefix(t.GetName(), base+".") {
			inits = append(inits, t)
		}
	}
	g.Initializer = inits
}

// addFlip inserts FlipAverage between the images and the backbone and between the backbone's
// features and the head.
func addFlip(m *onnx.ModelProto) error {
	g := m.Graph
	dim, err := strconv.Atoi(metadata(m, "feature_dim"))
	if err != nil || dim <= 0 {
		return fmt.Errorf("export: adding the mirror pass needs the model's feature_dim metadata (got %q)", metadata(m, "feature_dim"))
	}
	readers := onnxpb.Consumers(g)[backbone.OutputName]
	if len(readers) == 0 {
		return fmt.Errorf("export: adding the mirror pass: no node reads the backbone's %q", backbone.OutputName)
	}
	used := onnxpb.Names(g)
	mean, err := addFlipAverage(m, used, onnxpb.UniqueName(used, "head.flip"), dim)
	if err != nil {
		return err
	}
	for _, n := range readers {
		for i, in := range n.Input {
			if in == backbone.OutputName {
				n.Input[i] = mean
			}
		}
	}
	// addFlipAverage appended the Reshape and ReduceMean: move them after the features' producer.
	tail := g.Node[len(g.Node)-2:]
	rest := append([]*onnx.NodeProto(nil), g.Node[:len(g.Node)-2]...)
	var nodes []*onnx.NodeProto
	for _, n := range rest {
		nodes = append(nodes, n)
		for _, o := range n.Output {
			if o == backbone.OutputName {
				nodes = append(nodes, tail...)
			}
		}
	}
	g.Node = nodes
	return nil
}

// metadata returns the value of a metadata_props key, or "".
func metadata(m *onnx.ModelProto, key string) string {
	for _, p := range m.GetMetadataProps() {
		if p.GetKey() == key {
			return p.GetValue()
		}
	}
	return ""
}
