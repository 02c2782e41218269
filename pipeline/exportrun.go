package pipeline

import (
	"context"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"strconv"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/internal/atomicfile"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/export"
)

// exportCheckImages is how many evaluation images the exported model is checked on.
const exportCheckImages = 32

// metaLoss is the model's metadata key naming the loss that trained it (exportedLoss).
const metaLoss = "loss"

// exportedLoss is the metaLoss value of a run trained with loss.name name: the name itself
// ("triplet", "multi_similarity", ...), "group_loss" for the Group Loss as models said before the
// other losses existed.
func exportedLoss(name config.LossName) string {
	if string(name) == string(head.LossGroup) {
		return "group_loss"
	}
	return string(name)
}

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

// export writes the model m, after the backbone its features come from, as model.onnx, reloads
// it in onnxruntime and compares its embeddings of real evaluation images with the in-process
// ones (max |diff| <= 1e-4), then writes the variants.
func (r *runner) export(ctx context.Context, m model) error {
	layers, err := m.layers()
	if err != nil {
		return err
	}
	cut, ci, extra, err := m.source().backbone()
	if err != nil {
		return err
	}
	meta := export.Metadata{Preprocess: r.pre.Metadata(), ToolVersion: Version, SourceSHA256: r.bb.Info().SHA256,
		Extra: map[string]string{metaLoss: exportedLoss(r.cfg.Loss.Name), "train.classes": strconv.Itoa(len(r.split.fit)),
			metaEmbeddingSource: r.embeddingSource()}}
	maps.Copy(meta.Extra, extra)
	if n := r.cfg.EnsembleSize(); n > 1 {
		meta.Extra["ensemble"] = strconv.Itoa(n)
	}
	sess, built, err := r.writeModel(cut, ci, layers, meta, m.dim())
	if err != nil {
		return err
	}
	defer sess.Close()
	path := built.path
	evalIdx := r.split.evalIdx
	idx := evalIdx[:min(exportCheckImages, len(evalIdx))]
	e := m.dim()
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
		want, err := m.embedImages(in, batch.N)
		if err != nil {
			return err
		}
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
	return r.exportVariants(ctx, built)
}

// writeModel writes model.onnx (the backbone cut at ci plus layers) into the run folder, records it
// in the summary and opens it in onnxruntime for the check against the in-process embeddings. The
// model is built and serialized once: the file, the session and the variants (exportVariants) come
// from the same model and bytes.
func (r *runner) writeModel(cut *onnx.ModelProto, ci *backbone.CutInfo, layers []export.Layer, meta export.Metadata, dim int) (*ort.Session, builtModel, error) {
	path := filepath.Join(r.dir, "model.onnx")
	m, err := export.Build(cut, ci, layers, meta)
	if err != nil {
		return nil, builtModel{}, err
	}
	bm, err := saveModel(path, m)
	if err != nil {
		return nil, builtModel{}, err
	}
	r.sum.Export = ExportSummary{Path: path, EmbeddingDim: dim, EmbeddingSource: meta.Extra[metaEmbeddingSource]}
	sess, err := ort.NewSession(bm.bytes, ort.Options{Threads: r.cfg.Threads})
	if err != nil {
		return nil, builtModel{}, fmt.Errorf("pipeline: exported model %q does not load in onnxruntime: %w", path, err)
	}
	return sess, bm, nil
}

// builtModel is a model this run wrote: the model, its bytes and its file.
type builtModel struct {
	model *onnx.ModelProto
	bytes []byte
	path  string
}

// saveModel serializes m once and writes it to path atomically.
func saveModel(path string, m *onnx.ModelProto) (builtModel, error) {
	b, err := onnxpb.Marshal(m)
	if err != nil {
		return builtModel{}, fmt.Errorf("pipeline: %q: %w", path, err)
	}
	if err := atomicfile.WriteBytes(path, "the exported model", b); err != nil {
		return builtModel{}, fmt.Errorf("pipeline: %w", err)
	}
	return builtModel{model: m, bytes: b, path: path}, nil
}
