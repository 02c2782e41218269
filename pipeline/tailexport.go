package pipeline

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/backbone"
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
	cut, ci, err := backbone.Cut(wb, s.feature)
	if err != nil {
		return nil, nil, fmt.Errorf("pipeline: export: %w", err)
	}
	return cut, ci, nil
}

// backbone returns the fine-tuned backbone cut at the features and the metadata entries that
// say which part was trained.
func (m *tailModel) backbone() (*onnx.ModelProto, *backbone.CutInfo, map[string]string, error) {
	cut, ci, err := m.fineTunedBackbone(m.setup)
	if err != nil {
		return nil, nil, nil, err
	}
	meta := map[string]string{"backbone.trained_from": m.setup.cut, "backbone.dequantized": strconv.FormatBool(m.setup.dequantized)}
	if m.setup.trainBlocks > 0 {
		meta["backbone.train_blocks"] = strconv.Itoa(m.setup.trainBlocks)
	}
	return cut, ci, meta, nil
}
