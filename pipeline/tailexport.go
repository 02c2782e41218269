package pipeline

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/export"
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

// exportTail writes the fine-tuned backbone + head as model.onnx, reloads it in onnxruntime and
// compares its embeddings of real evaluation images with the in-process ones (prefix in
// onnxruntime, tail in Go, head): max |diff| <= 1e-4.
func (r *runner) exportTail(ctx context.Context, s *tailSetup, m *tailModel, evalIdx []int) error {
	cut, ci, err := m.fineTunedBackbone(s)
	if err != nil {
		return err
	}
	layers, err := m.layers()
	if err != nil {
		return err
	}
	meta := export.Metadata{Preprocess: r.pre.Metadata(), ToolVersion: Version, SourceSHA256: r.bb.Info().SHA256,
		Extra: map[string]string{"loss": "group_loss", "train.classes": strconv.Itoa(len(m.classes)),
			"backbone.trained_from": s.cut, "backbone.dequantized": strconv.FormatBool(r.sum.Tail.Dequantized),
			metaEmbeddingSource: r.embeddingSource()}}
	if r.cfg.Backbone.TrainBlocks > 0 {
		meta.Extra["backbone.train_blocks"] = strconv.Itoa(r.cfg.Backbone.TrainBlocks)
	}
	sess, path, err := r.writeModel(cut, ci, layers, meta, m.dim())
	if err != nil {
		return err
	}
	defer sess.Close()
	pb, err := onnxpb.Marshal(s.prefix)
	if err != nil {
		return err
	}
	prefix, err := ort.NewSession(pb, ort.Options{Threads: r.cfg.Threads})
	if err != nil {
		return fmt.Errorf("pipeline: the backbone before %q in onnxruntime: %w", s.cut, err)
	}
	defer prefix.Close()

	idx := evalIdx[:min(exportCheckImages, len(evalIdx))]
	e, in := m.dim(), m.inDim
	views := 1
	if m.flipTTA {
		views = 2
	}
	var worst float64
	chw := r.pre.Size()
	for batch := range data.Batches(ctx, r.ds, idx, r.pre, 16, r.cfg.Preprocess.Workers) {
		if batch.Err != nil {
			return batch.Err
		}
		n := batch.N
		img := batch.Data[:n*chw]
		got := make([]float32, n*e)
		if err := sess.Run(img, n, got); err != nil {
			return fmt.Errorf("pipeline: running exported model %q: %w", path, err)
		}
		feats := make([]float32, n*m.featDim)
		act := make([]float32, n*in)
		for v := 0; v < views; v++ {
			if v == 1 {
				img = rowops.Mirror(nil, img, r.pre.Width)
			}
			if err := prefix.Run(img, n, act); err != nil {
				return err
			}
			f, err := m.tail.Infer([][]float32{act}, n)
			if err != nil {
				return err
			}
			for j, x := range f {
				feats[j] += x / float32(views)
			}
		}
		want := m.embed(feats, n)
		for i := 0; i < n; i++ {
			row := want[i*e : (i+1)*e]
			inv := rowops.InvNorm(row)
			for j, v := range row {
				worst = math.Max(worst, math.Abs(float64(v)*inv-float64(got[i*e+j])))
			}
		}
		r.sum.Export.CheckedRows += n
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.sum.Export.MaxAbsDiff = worst
	r.env.Log.Info("exported", "path", path, "max_abs_diff", worst, "checked_images", r.sum.Export.CheckedRows)
	if worst > 1e-4 {
		return fmt.Errorf("pipeline: exported model %q differs from the in-process embeddings by %.3g (> 1e-4)", path, worst)
	}
	return r.exportVariants(ctx)
}
