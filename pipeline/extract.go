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

// features returns the backbone features of every item of the dataset (n x D, in item order)
// and, when cfg.Backbone.Flip is set, those of the horizontally mirrored images (nil otherwise).
// Both come from the on-disk cache when the model, the cut, the preprocessing, the image list and
// the images' bytes are unchanged (contentKey). With on_bad_image skip, the rows of images that do not decode are zeros and the
// images are listed in r.skipped; with fail, the first one is an error naming the file.
func (r *runner) features(ctx context.Context) (feats, flips []float32, err error) {
	n, d := len(r.ds.Items), r.bb.Dim()
	skip := r.cfg.OnBadImage == "skip"
	content, err := r.contentKey(ctx)
	if err != nil {
		return nil, nil, err
	}
	key := data.CacheKey(r.bb.Hash(), r.pre.Key(), content, "flip="+strconv.FormatBool(r.mirrors()))
	path := filepath.Join(r.cfg.Cache, key+".feat")
	if f, ok := r.cachedFeatures(path, n*r.copies(), d, skip); ok {
		return r.splitCopies(f, n, d)
	}
	start := time.Now()
	all := make([]float32, n*d*r.copies())
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	prog := data.NewProgress(r.env.Progress, "extract", n)
	chw := r.pre.Size()
	var flipped, rows []float32
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	loader := data.Loader{Preprocess: r.pre, BatchSize: r.cfg.Backbone.BatchSize, Workers: r.cfg.Preprocess.Workers, SkipBad: skip}
	for b := range loader.Batches(ctx, r.ds, items) {
		if b.Err != nil {
			return nil, nil, r.imageHint(b.Err)
		}
		for _, ie := range b.Skipped {
			r.skipped = append(r.skipped, r.skippedImage(ie))
		}
		// out computes the features of the batch's rows in dst (copy 0) or dst+n*d (copy 1): in place
		// when no row was skipped, else scattered to the rows of b.Items.
		out := func(in []float32, copyOff int) error {
			if len(b.Skipped) == 0 {
				off := copyOff + b.Start*d
				return r.bb.Features(in, b.N, all[off:off+b.N*d])
			}
			if cap(rows) < b.N*d {
				rows = make([]float32, b.N*d)
			}
			rows = rows[:b.N*d]
			if err := r.bb.Features(in, b.N, rows); err != nil {
				return err
			}
			for i, it := range b.Items {
				copy(all[copyOff+it*d:copyOff+(it+1)*d], rows[i*d:(i+1)*d])
			}
			return nil
		}
		if b.N > 0 {
			if err := out(b.Data[:b.N*chw], 0); err != nil {
				return nil, nil, err
			}
			if r.mirrors() {
				flipped = rowops.Mirror(flipped, b.Data[:b.N*chw], r.pre.Width)
				if err := out(flipped, n*d); err != nil {
					return nil, nil, err
				}
			}
		}
		prog.Add(b.N + len(b.Skipped))
		b.Release()
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	prog.Done()
	if err := r.checkFeatures(all, n, d); err != nil { // before caching: a NaN is never cached
		return nil, nil, err
	}
	secs := time.Since(start).Seconds()
	r.sum.Timing.ExtractSeconds = secs
	r.sum.Timing.ExtractImagesPerS = float64((n-len(r.skipped))*r.copies()) / secs
	if err := os.MkdirAll(r.cfg.Cache, 0o755); err != nil {
		return nil, nil, fmt.Errorf("pipeline: feature cache: %w", err)
	}
	meta := map[string]string{"model": r.bb.Hash(), "preprocess": r.pre.Key(), "data": r.ds.Source}
	if len(r.skipped) > 0 {
		b, _ := json.Marshal(r.skipped)
		meta[metaSkipped] = string(b)
	}
	if err := data.SaveFeatures(path, all, n*r.copies(), d, meta); err != nil {
		r.env.Log.Warn("could not write the feature cache", "path", path, "err", err)
	}
	return r.splitCopies(all, n, d)
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
