package pipeline

import (
	"context"
	"fmt"

	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline/export"
	"github.com/grouploss/pipeline/pipeline/metrics"
)

// Never worse than the raw features without saying so. Training can lose to the backbone's own
// features (few classes, a domain far from ImageNet). After training, the run scores the raw
// features (flip averaged with backbone.flip_tta) on the validation classes with the score that
// selected the best epoch (MAP@R over every validation image), and exports the better of the two:
// the trained model, or the raw features through the same export path (same input and metadata,
// "embedding_source" saying which). keep_trained exports the trained model regardless.

// Embedding sources (metrics.json export.embedding_source, the model's metadata key
// metaEmbeddingSource).
const (
	metaEmbeddingSource = "embedding_source"
	sourceTrained       = "trained"
	sourceRaw           = "raw_features"
)

// ExportChoice is why the exported model is what it is (metrics.json "export_choice").
type ExportChoice struct {
	// Source is what model.onnx embeds: "trained" or "raw_features".
	Source string `json:"embedding_source"`
	// Compared is false when there were no validation classes to compare on.
	Compared bool `json:"compared"`
	// Metric names the score both were compared by; Trained is the best epoch's, Raw the raw
	// features'.
	Metric  string  `json:"metric,omitempty"`
	Trained float64 `json:"trained_validation,omitempty"`
	Raw     float64 `json:"raw_validation,omitempty"`
	// Message is the sentence the run prints about the choice.
	Message string `json:"message"`
}

// rawModel is the raw backbone features as a trainedModel (identity, flip averaged in the export
// with flip_tta): what the run exports when training did not beat them.
type rawModel struct {
	d       int
	flipTTA bool
}

func (m rawModel) embed(x []float32, n int) []float32 { return append([]float32(nil), x...) }
func (m rawModel) dim() int                           { return m.d }
func (m rawModel) layers() ([]export.Layer, error) {
	if m.flipTTA {
		return []export.Layer{export.FlipAverage{}}, nil
	}
	return nil, nil
}

// chooseExport compares the trained model's best validation score with the raw features' on the
// validation classes (feats and flips are the raw features of every item, flips nil without
// mirrors; d values each) and records the choice in the summary. It reports whether the raw
// features are to be exported.
func (r *runner) chooseExport(feats, flips []float32, d int) (bool, error) {
	cfg, split := r.cfg, r.split
	c := &ExportChoice{Source: sourceTrained}
	r.sum.Choice = c
	if len(split.val) == 0 || cfg.ensembleSize() > 1 {
		c.Message = "the trained model is exported without comparison: no validation classes to compare it with the raw features on"
		if len(split.val) > 0 {
			c.Message = "the ensemble is exported without comparison with the raw features (its members are selected one by one)"
		}
		r.env.Log.Warn(c.Message)
		r.sum.Warnings = append(r.sum.Warnings, c.Message)
		return false, nil
	}
	valX := rowops.Gather(feats, d, split.valIdx)
	if cfg.Backbone.FlipTTA && flips != nil {
		valX = rowops.Mean(valX, rowops.Gather(flips, d, split.valIdx))
	}
	res, err := metrics.Evaluate(valX, len(split.valIdx), d, r.ds.Labels(split.valIdx), metrics.Options{SkipClustering: true})
	if err != nil {
		return false, err
	}
	c.Compared, c.Raw, c.Trained = true, res.MAPAtR, r.sum.Training.BestScore
	c.Metric = fmt.Sprintf("map_at_r over the %d images of the %d validation classes", len(split.valIdx), len(split.val))
	scores := fmt.Sprintf("validation MAP@R %.2f trained (epoch %d) vs %.2f raw", 100*c.Trained, r.sum.Training.BestEpoch, 100*c.Raw)
	switch {
	case c.Trained > c.Raw:
		c.Message = "the trained model beats the raw features on the validation classes: " + scores
		r.env.Log.Info(c.Message)
		return false, nil
	case cfg.KeepTrained:
		c.Message = "the trained model does not beat the raw features on the validation classes (" + scores + "); exported anyway (keep_trained)"
	default:
		c.Source = sourceRaw
		c.Message = "training did not beat the raw features on the validation classes (" + scores + "): model.onnx embeds the raw features; --keep-trained exports the trained model"
	}
	r.env.Log.Warn(c.Message)
	r.sum.Warnings = append(r.sum.Warnings, c.Message)
	return c.Source == sourceRaw, nil
}

// exportRaw exports the raw features (see rawModel) and writes the report on them.
func (r *runner) exportRaw(ctx context.Context, feats, flips []float32) error {
	split, d := r.split, r.bb.Dim()
	m := rawModel{d: d, flipTTA: r.cfg.Backbone.FlipTTA && flips != nil}
	emb := rowops.Gather(feats, d, split.evalIdx)
	if m.flipTTA {
		emb = rowops.Mean(emb, rowops.Gather(flips, d, split.evalIdx))
	}
	if err := r.export(ctx, m, split.evalIdx); err != nil {
		return err
	}
	r.writeReport(emb, d, split.evalIdx)
	return nil
}

// embeddingSource is the export's embedding_source: what chooseExport chose.
func (r *runner) embeddingSource() string {
	if r.sum.Choice == nil {
		return sourceTrained
	}
	return r.sum.Choice.Source
}
