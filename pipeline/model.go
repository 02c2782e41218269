package pipeline

import (
	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/export"
)

// A run trains one model, then evaluates, exports and reports it, whatever its kind (run.go):
//
//   - the head on the backbone's frozen features: *headModel over frozenFeatures (headtrain.go);
//   - the backbone's tail and the head as one graph: *tailModel, a *headModel over the tail's
//     features (tailtrain.go);
//   - a naive ensemble of heads: *ensembleModel (ensemble.go);
//   - the raw features, exported when training does not beat them: rawModel (choose.go).
//
// Every kind is trained by one call, runner.train, from a problem that holds what differs between
// the kinds (fitrun.go).

// model is what a run evaluates, exports and reports.
type model interface {
	// dim is the embedding size.
	dim() int
	// embedItems returns the (len(items), dim) float32 embeddings, not normalized, of dataset
	// items: flip averaged with backbone.flip_tta.
	embedItems(items []int) ([]float32, error)
	// embedImages returns the (n, dim) float32 embeddings, not normalized, of n preprocessed
	// images (NCHW float32) computed in process: what the exported model must reproduce.
	embedImages(img []float32, n int) ([]float32, error)
	// layers returns the model after the features of source() as export layers.
	layers() ([]export.Layer, error)
	// source is where the features the model embeds come from.
	source() featureSource
}

// featureSource gives the features a head embeds: the frozen backbone's (frozenFeatures) or the
// fine-tuned tail's (*tailModel).
type featureSource interface {
	// featureDim is the number of values per feature row.
	featureDim() int
	// items returns the (len(items), featureDim) features of dataset items: the mean over each image
	// and its mirror when avg is set (and mirrors exist), else of the images.
	items(items []int, avg bool) ([]float32, error)
	// images returns the (n, featureDim) features of n preprocessed images (NCHW float32): the mean
	// with their mirrors' when avg is set.
	images(img []float32, n int, avg bool) ([]float32, error)
	// backbone returns the backbone cut at the features (input images, output "features"), as
	// the exported model starts, and the metadata entries that describe it.
	backbone() (*onnx.ModelProto, *backbone.CutInfo, map[string]string, error)
}

// frozenFeatures is the frozen backbone's features of the dataset: feats and flips (nil without
// mirrors) hold d values per item, extracted once (extract.go).
type frozenFeatures struct {
	feats, flips []float32
	d            int
	bb           *backbone.Backbone
	pre          data.Preprocess
}

func (f frozenFeatures) featureDim() int { return f.d }

func (f frozenFeatures) items(items []int, avg bool) ([]float32, error) {
	x := rowops.Gather(f.feats, f.d, items)
	if avg && f.flips != nil {
		x = rowops.Mean(x, rowops.Gather(f.flips, f.d, items))
	}
	return x, nil
}

func (f frozenFeatures) images(img []float32, n int, avg bool) ([]float32, error) {
	x := make([]float32, n*f.d)
	if err := f.bb.Features(img, n, x); err != nil {
		return nil, err
	}
	if avg {
		mirrored := make([]float32, n*f.d)
		if err := f.bb.Features(rowops.Mirror(nil, img, f.pre.Width), n, mirrored); err != nil {
			return nil, err
		}
		x = rowops.Mean(x, mirrored)
	}
	return x, nil
}

func (f frozenFeatures) backbone() (*onnx.ModelProto, *backbone.CutInfo, map[string]string, error) {
	return f.bb.Cut(), f.bb.CutInfo(), nil, nil
}
