package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/grouploss/pipeline/internal/atomicfile"
	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline/data"
)

// extracted is what a run takes from the images through onnxruntime: the backbone features of
// every item (n x D, in item order) and, when mirrors are used, those of the mirrored images (nil
// otherwise); with tail fine-tuning, the activations at the cut (row item*views+view, views 1 or
// 2 with mirrors).
type extracted struct {
	feats, flips []float32
	acts         []float32
	views        int
}

// extract returns the features and, with the tail s (nil: none), the activations at its cut:
// each from its on-disk cache when the model, the cut, the preprocessing, the image list and the
// images' bytes are unchanged (contentKey), the missing ones extracted. When both are missing and
// the backbone's model computes both (a float model, or an int8 one run as its float conversion),
// one onnxruntime pass gives both: the cut tensor is an extra output of the feature model, with
// the same values as the prefix model's (checked in TestOnePassExtraction).
//
// With on_bad_image skip, the rows of images that do not decode are zeros and the images are
// listed in r.skipped; with fail, the first one is an error naming the file.
func (r *runner) extract(ctx context.Context, s *tailSetup) (extracted, error) {
	n, d, views := len(r.ds.Items), r.bb.Dim(), r.copies()
	content, err := r.contentKey(ctx)
	if err != nil {
		return extracted{}, err
	}
	fpath := filepath.Join(r.cfg.Cache, data.CacheKey(r.bb.Hash(), r.pre.Key(), content, "flip="+strconv.FormatBool(r.mirrors()))+".feat")
	// Features: copy v of item i at row v*n+i (the mirrors after all the images).
	fo := &passOutput{dim: d, row: func(item, v int) int { return v*n + item }}
	var haveF bool
	if fo.dst, haveF = r.cachedFeatures(fpath, n*views, d, r.cfg.OnBadImage == "skip"); !haveF {
		fo.dst = make([]float32, n*views*d)
	}
	var ao *passOutput
	apath, haveA := "", true
	if s != nil {
		apath = r.activationPath(s, content)
		ad := prodInts(s.shape)
		ao = &passOutput{dim: ad, row: func(item, v int) int { return item*views + v }}
		if ao.dst = r.cachedActivations(apath, n*views, ad); ao.dst == nil {
			haveA, ao.dst = false, make([]float32, n*views*ad)
		}
	}
	start := time.Now()
	if !haveF && !haveA && s.onePass(r.bb) {
		err := r.extractBoth(ctx, s, fo, ao)
		if err == nil {
			err = r.finishFeatures(fpath, fo.dst, start)
		}
		if err == nil {
			r.sum.Tail.ActivationsWithFeatures = true
			err = r.finishActivations(s, apath, ao.dst, start)
		}
		if err != nil {
			return extracted{}, err
		}
	} else {
		if !haveF {
			err := r.extractPass(ctx, "extract", func(in []float32, b int, dst [][]float32) error {
				return r.bb.Features(in, b, dst[0])
			}, fo)
			if err == nil {
				err = r.finishFeatures(fpath, fo.dst, start)
			}
			if err != nil {
				return extracted{}, err
			}
		}
		if !haveA {
			start := time.Now()
			err := r.extractActivations(ctx, s, ao)
			if err == nil {
				err = r.finishActivations(s, apath, ao.dst, start)
			}
			if err != nil {
				return extracted{}, err
			}
		}
	}
	e := extracted{feats: fo.dst, views: views}
	if r.mirrors() {
		e.feats, e.flips = fo.dst[:n*d], fo.dst[n*d:]
	}
	if ao != nil {
		e.acts = ao.dst
	}
	return e, nil
}

// features is extract without the activations: the frozen features and their mirrors'.
func (r *runner) features(ctx context.Context) (feats, flips []float32, err error) {
	e, err := r.extract(ctx, nil)
	return e.feats, e.flips, err
}

// finishFeatures checks freshly extracted features, records the extraction's speed and caches
// them.
func (r *runner) finishFeatures(path string, all []float32, start time.Time) error {
	n, d := len(r.ds.Items), r.bb.Dim()
	if err := r.checkFeatures(all, n, d); err != nil { // before caching: a NaN is never cached
		return err
	}
	secs := time.Since(start).Seconds()
	r.sum.Timing.ExtractSeconds = secs
	r.sum.Timing.ExtractImagesPerS = float64((n-len(r.skipped))*r.copies()) / secs
	if err := os.MkdirAll(r.cfg.Cache, 0o755); err != nil {
		return fmt.Errorf("pipeline: feature cache: %w", err)
	}
	meta := map[string]string{"model": r.bb.Hash(), "preprocess": r.pre.Key(), "data": r.ds.Source}
	if len(r.skipped) > 0 {
		b, _ := json.Marshal(r.skipped)
		meta[metaSkipped] = string(b)
	}
	if err := data.SaveFeatures(path, all, n*r.copies(), d, meta); err != nil {
		r.env.Log.Warn("could not write the feature cache", "path", path, "err", err)
	}
	return nil
}

// passOutput is one tensor an extraction pass computes: dim values per image (or mirror), stored
// in dst at row(item, view).
type passOutput struct {
	dim int
	row func(item, view int) int
	dst []float32
}

// extractPass runs run over every image of the dataset and, when mirrors are used, over its
// mirror (view 1), and writes each output's values to its rows; run gets a batch of b
// preprocessed images and fills dst[k] with b*outs[k].dim values. Images that do not decode fail
// the pass (on_bad_image fail, an error naming the file) or keep zero rows and are listed in
// r.skipped (skip; the list is the pass's own, the same for every pass over the same images).
func (r *runner) extractPass(ctx context.Context, label string, run func(in []float32, b int, dst [][]float32) error, outs ...*passOutput) error {
	n, views, chw := len(r.ds.Items), r.copies(), r.pre.Size()
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	bufs := make([][]float32, len(outs))
	var flipped []float32
	r.skipped = nil
	prog := data.NewProgress(r.env.Progress, label, n)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	loader := data.Loader{Preprocess: r.pre, BatchSize: r.cfg.Backbone.BatchSize, Workers: r.cfg.Preprocess.Workers, SkipBad: r.cfg.OnBadImage == "skip"}
	for b := range loader.Batches(ctx, r.ds, items) {
		if b.Err != nil {
			return r.imageHint(b.Err)
		}
		for _, ie := range b.Skipped {
			r.skipped = append(r.skipped, r.skippedImage(ie))
		}
		in := b.Data[:b.N*chw]
		for v := 0; v < views && b.N > 0; v++ {
			if v == 1 {
				flipped = rowops.Mirror(flipped, b.Data[:b.N*chw], r.pre.Width)
				in = flipped
			}
			for k, o := range outs {
				if cap(bufs[k]) < b.N*o.dim {
					bufs[k] = make([]float32, b.N*o.dim)
				}
				bufs[k] = bufs[k][:b.N*o.dim]
			}
			if err := run(in, b.N, bufs); err != nil {
				return err
			}
			for k, o := range outs {
				for i, it := range b.Items {
					row := o.row(it, v)
					copy(o.dst[row*o.dim:(row+1)*o.dim], bufs[k][i*o.dim:(i+1)*o.dim])
				}
			}
		}
		prog.Add(b.N + len(b.Skipped))
		b.Release()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	prog.Done()
	return nil
}

// cachedFeatures returns the cached features at path if they have n rows of d and are usable
// under the on_bad_image policy: features cached by a run that skipped undecodable images are not
// used with on_bad_image fail, so that extracting again fails on the first one.
func (r *runner) cachedFeatures(path string, n, d int, skip bool) ([]float32, bool) {
	f, meta, err := data.LoadFeaturesShape(path, n, d)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			r.env.Log.Warn("feature cache unusable, extracting again", "path", path, "err", err)
		}
		return nil, false
	}
	if i := firstNonFinite(f); i >= 0 {
		r.env.Log.Warn("feature cache holds a non-finite value, extracting again", "path", path, "row", i/d, "value", f[i])
		return nil, false
	}
	var skipped []skippedImage
	if s := meta[metaSkipped]; s != "" {
		if err := json.Unmarshal([]byte(s), &skipped); err != nil {
			r.env.Log.Warn("feature cache: bad skipped-image list, extracting again", "path", path, "err", err)
			return nil, false
		}
	}
	if len(skipped) > 0 && !skip {
		r.env.Log.Info("the cached features leave out undecodable images; extracting again (on_bad_image fail)", "path", path)
		return nil, false
	}
	r.skipped = skipped
	r.sum.Timing.FeatureCacheHit = true
	r.env.Log.Info("features from cache", "path", path)
	return f, true
}

// metaSkipped is the feature-cache metadata key of the JSON list of skipped images (their rows
// are zeros).
const metaSkipped = "skipped_images"

// skippedImage is an image left out with on_bad_image skip.
type skippedImage struct {
	Item   int    `json:"item"` // index into Dataset.Items
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

func (r *runner) skippedImage(ie *data.ImageError) skippedImage {
	reason := ie.Err.Error()
	if ie.Item >= 0 && r.ds.Items[ie.Item].Line > 0 {
		reason = fmt.Sprintf("manifest line %d: %s", r.ds.Items[ie.Item].Line, reason)
	}
	return skippedImage{Item: ie.Item, Path: ie.Path, Reason: reason}
}

// imageHint attaches what to do to an image that does not decode.
func (r *runner) imageHint(err error) error {
	var ie *data.ImageError
	if !errors.As(err, &ie) {
		return err
	}
	what := fmt.Sprintf("replace or remove %s", ie.Path)
	if ie.Item >= 0 && r.ds.Items[ie.Item].Line > 0 {
		what = fmt.Sprintf("replace %s or remove line %d of %s", ie.Path, r.ds.Items[ie.Item].Line, r.ds.Source)
	}
	return withHint(fmt.Errorf("pipeline: extract: %w", err), what+", or pass --on-bad-image skip to leave undecodable images out")
}

// dropSkipped removes the skipped images from the split and lists them in skipped_images.txt in
// the run folder: one line per image, its path, a tab and why it was skipped.
func (r *runner) dropSkipped() error {
	r.sum.Data.SkippedImages = len(r.skipped)
	if len(r.skipped) == 0 {
		return nil
	}
	bad := make(map[int]bool, len(r.skipped))
	var b strings.Builder
	for _, s := range r.skipped {
		bad[s.Item] = true
		fmt.Fprintf(&b, "%s\t%s\n", s.Path, s.Reason)
	}
	keep := func(idx []int) []int {
		var out []int
		for _, i := range idx {
			if !bad[i] {
				out = append(out, i)
			}
		}
		return out
	}
	s := &r.split
	hadEval := len(s.evalIdx) > 0 // Tune's dataset holds no evaluation images
	s.fitIdx, s.valIdx, s.evalIdx = keep(s.fitIdx), keep(s.valIdx), keep(s.evalIdx)
	r.sum.Data.TrainImages, r.sum.Data.EvalImages = len(s.fitIdx)+len(s.valIdx), len(s.evalIdx)
	path := filepath.Join(r.dir, "skipped_images.txt")
	w := fmt.Sprintf("skipped %d undecodable image(s) (on_bad_image skip), listed in skipped_images.txt of the run folder", len(r.skipped))
	r.env.Log.Warn(w)
	r.sum.Warnings = append(r.sum.Warnings, w)
	if err := atomicfile.WriteBytes(path, "skipped image list", []byte(b.String())); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	if hadEval && len(s.evalIdx) == 0 {
		return fmt.Errorf("pipeline: every image of the evaluation classes was skipped as undecodable (see %s)", path)
	}
	return nil
}

// contentKey is the dataset's data.ContentKey, computed once per run: the part of the feature and
// activation cache keys that covers the images' contents, so that another folder with the same
// file names, or an edited image, is never served another image's cached features.
func (r *runner) contentKey(ctx context.Context) (string, error) {
	if r.content != "" {
		return r.content, nil
	}
	start := time.Now()
	k, err := r.ds.ContentKey(ctx, r.cfg.Preprocess.Workers)
	if err != nil {
		return "", fmt.Errorf("pipeline: hash the images: %w", err)
	}
	r.env.Log.Info("hashed the images for the cache key", "images", len(r.ds.Items), "seconds", time.Since(start).Seconds())
	r.content = k
	return k, nil
}

// mirrors says whether the features of the mirrored images are needed.
func (r *runner) mirrors() bool { return r.cfg.Backbone.Flip || r.cfg.Backbone.FlipTTA }

func (r *runner) copies() int {
	if r.mirrors() {
		return 2
	}
	return 1
}

func (r *runner) splitCopies(all []float32, n, d int) ([]float32, []float32, error) {
	if r.mirrors() {
		return all[:n*d], all[n*d:], nil
	}
	return all, nil, nil
}
