package pipeline

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strconv"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/export"
)

// exportCheckImages is how many evaluation images the exported model is checked on.
const exportCheckImages = 32

// layers returns the head as export layers: feature transform, embedding layer.
func (m *headModel) layers() ([]export.Layer, error) {
	var ls []export.Layer
	if m.flipTTA {
		ls = append(ls, export.FlipAverage{})
	}
	if m.center != nil {
		ls = append(ls, export.Center{Mean: m.center})
	}
	if m.normalize {
		ls = append(ls, export.L2Normalize{})
	}
	var w, b []float64
	for _, p := range m.h.Params() {
		switch p.Name {
		case paramEmbWeight:
			w = p.Value
		case paramEmbBias:
			b = p.Value
		}
	}
	if w == nil || b == nil {
		return nil, fmt.Errorf("pipeline: the head has no embedding layer parameters")
	}
	cfg := m.h.Config()
	ls = append(ls, export.Linear{In: cfg.In, Out: cfg.Emb, W: toF32(w), B: toF32(b)})
	return ls, nil
}

func toF32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

// export writes backbone + head as model.onnx, reloads it in onnxruntime and compares its
// embeddings with the in-process ones on real evaluation images.
func (r *runner) export(ctx context.Context, m trainedModel, evalIdx []int) error {
	layers, err := m.layers()
	if err != nil {
		return err
	}
	meta := export.Metadata{Preprocess: r.pre.Metadata(), ToolVersion: Version,
		SourceSHA256: r.bb.Info().SHA256, Extra: map[string]string{"loss": "group_loss", "train.classes": strconv.Itoa(len(r.split.fit)),
			metaEmbeddingSource: r.embeddingSource()}}
	if n := r.cfg.ensembleSize(); n > 1 {
		meta.Extra["ensemble"] = strconv.Itoa(n)
	}
	sess, path, err := r.writeModel(r.bb.Cut(), r.bb.CutInfo(), layers, meta, m.dim())
	if err != nil {
		return err
	}
	defer sess.Close()
	idx := evalIdx[:min(exportCheckImages, len(evalIdx))]
	d, e := r.bb.Dim(), m.dim()
	var worst float64
	chw := r.pre.Size()
	for batch := range data.Batches(ctx, r.ds, idx, r.pre, 16, r.cfg.Preprocess.Workers) {
		if batch.Err != nil {
			return batch.Err
		}
		in := batch.Data[:batch.N*chw]
		got := make([]float32, batch.N*e)
		if err := sess.Run(in, batch.N, got); err != nil {
			return fmt.Errorf("pipeline: running exported model %q: %w", path, err)
		}
		feats := make([]float32, batch.N*d)
		if err := r.bb.Features(in, batch.N, feats); err != nil {
			return err
		}
		if r.cfg.Backbone.FlipTTA {
			mirrored := make([]float32, batch.N*d)
			if err := r.bb.Features(rowops.Mirror(nil, in, r.pre.Width), batch.N, mirrored); err != nil {
				return err
			}
			feats = rowops.Mean(feats, mirrored)
		}
		want := m.embed(feats, batch.N)
		for i := 0; i < batch.N; i++ {
			row := want[i*e : (i+1)*e]
			inv := rowops.InvNorm(row)
			for j, v := range row {
				worst = math.Max(worst, math.Abs(float64(v)*inv-float64(got[i*e+j])))
			}
		}
		r.sum.Export.CheckedRows += batch.N
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

// writeModel writes model.onnx (the backbone cut at ci plus layers) into the run folder, records it
// in the summary and opens it in onnxruntime for the check against the in-process embeddings.
func (r *runner) writeModel(cut *onnx.ModelProto, ci *backbone.CutInfo, layers []export.Layer, meta export.Metadata, dim int) (*ort.Session, string, error) {
	path := filepath.Join(r.dir, "model.onnx")
	if err := export.Write(path, cut, ci, layers, meta); err != nil {
		return nil, "", err
	}
	r.sum.Export = ExportSummary{Path: path, EmbeddingDim: dim, EmbeddingSource: meta.Extra[metaEmbeddingSource]}
	b, err := onnxpb.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	sess, err := ort.NewSession(b, ort.Options{Threads: r.cfg.Threads})
	if err != nil {
		return nil, "", fmt.Errorf("pipeline: exported model %q does not load in onnxruntime: %w", path, err)
	}
	return sess, path, nil
}
