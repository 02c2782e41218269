package pipeline

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/weights"
)

// fineTunedBackbone returns the float backbone with the tail's trained weights written back
// (BatchNormalizations folded by the decoder removed), cut at the feature tensor.
func (m *tailModel) fineTunedBackbone(s *tailSetup) (*onnx.ModelProto, *backbone.CutInfo, error) {
	values := make(map[string][]float32, len(m.params))
	for _, p := range m.params {
		values[p.Name] = toF32(p.Value)
	}
	var folds []weights.Fold
	for _, f := range m.tail.Folded() {
		conv, bn, ok := strings.Cut(f, " <- ")
		if !ok {
			return nil, nil, fmt.Errorf("pipeline: unexpected fold description %q", f)
		}
		folds = append(folds, weights.Fold{Conv: conv, BatchNorm: bn})
	}
	wb, err := weights.WriteBack(s.float, values, folds)
	if err != nil {
		return nil, nil, fmt.Errorf("pipeline: export: %w", err)
	}
	if s.int8 != nil {
		if wb, err = int8Prefixed(s.int8, wb, s.cut); err != nil {
			return nil, nil, fmt.Errorf("pipeline: export: %w", err)
		}
	}
	cut, ci, err := backbone.Cut(wb, s.feature)
	if err != nil {
		return nil, nil, fmt.Errorf("pipeline: export: %w", err)
	}
	return cut, ci, nil
}

// int8PrefixNames prefixes the names of the int8 layers in an int8Prefixed model: the float
// conversion keeps the int8 model's tensor names, with float values.
const int8PrefixNames = "int8/"

// int8Prefixed returns f with the tensor cut computed by the int8 model q's own layers,
// dequantized (a tail trained with backbone.tail_prefix int8 then sees in deployment the
// activations it was trained on). f's layers before the cut stay in the graph, unused: cutting
// the result at the features drops them.
func int8Prefixed(q, f *onnx.ModelProto, cut string) (*onnx.ModelProto, error) {
	p, ci, err := backbone.Cut(q, cut)
	if err != nil {
		return nil, fmt.Errorf("the int8 layers before %q: %w", cut, err)
	}
	if !ci.Quantized {
		return nil, fmt.Errorf("the int8 model's tensor %q is not quantized", cut)
	}
	pg := p.GetGraph()
	// backbone.Cut ends in DequantizeLinear, then Flatten for a 4-d tensor: the tail reads the
	// DequantizeLinear's output.
	producers := onnxpb.Producers(pg)
	last := producers[backbone.OutputName]
	dq := last
	if last.GetOpType() == "Flatten" {
		dq = producers[last.GetInput()[0]]
	}
	if dq == nil || dq.GetOpType() != "DequantizeLinear" {
		return nil, fmt.Errorf("the int8 layers before %q do not end in DequantizeLinear", cut)
	}
	for name := range onnxpb.Names(pg) {
		if name != ci.InputName {
			onnxpb.Rename(pg, name, int8PrefixNames+name)
		}
	}
	dq.Output[0] = cut
	out := onnxpb.Clone(f)
	g := out.GetGraph()
	producer := onnxpb.Producers(g)[cut]
	if producer == nil {
		return nil, fmt.Errorf("no node computes %q in the float model", cut)
	}
	nodes := make([]*onnx.NodeProto, 0, len(pg.GetNode())+len(g.GetNode()))
	for _, n := range pg.GetNode() {
		if n != last || last == dq {
			nodes = append(nodes, n)
		}
	}
	for _, n := range g.GetNode() {
		if n != producer {
			nodes = append(nodes, n)
		}
	}
	g.Node = nodes
	g.Initializer = append(g.Initializer, pg.GetInitializer()...)
	have := map[string]bool{}
	for _, o := range out.GetOpsetImport() {
		have[o.GetDomain()] = true
	}
	for _, o := range p.GetOpsetImport() {
		if !have[o.GetDomain()] {
			out.OpsetImport = append(out.OpsetImport, o)
		}
	}
	return out, nil
}

// backbone returns the fine-tuned backbone cut at the features and the metadata entries that
// say which part was trained.
func (m *tailModel) backbone() (*onnx.ModelProto, *backbone.CutInfo, map[string]string, error) {
	cut, ci, err := m.fineTunedBackbone(m.setup)
	if err != nil {
		return nil, nil, nil, err
	}
	meta := map[string]string{"backbone.trained_from": m.setup.cut, "backbone.dequantized": strconv.FormatBool(m.setup.dequantized),
		"backbone.tail_prefix": string(m.setup.prefixKind())}
	if m.setup.trainBlocks > 0 {
		meta["backbone.train_blocks"] = strconv.Itoa(m.setup.trainBlocks)
	}
	return cut, ci, meta, nil
}
