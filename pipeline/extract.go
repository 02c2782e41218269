package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/grouploss/pipeline/pipeline/data"
)

// features returns the backbone features of every item of the dataset (n x D, in item order)
// and, when cfg.Backbone.Flip is set, those of the horizontally mirrored images (nil otherwise).
// Both come from the on-disk cache when the model, the cut, the preprocessing and the image list
// are unchanged.
func (r *runner) features(ctx context.Context) (feats, flips []float32, err error) {
	n, d := len(r.ds.Items), r.bb.Dim()
	key := data.CacheKey(r.bb.Hash(), r.pre.Key(), r.ds.Fingerprint(), "flip="+strconv.FormatBool(r.cfg.Backbone.Flip))
	path := filepath.Join(r.cfg.Cache, key+".feat")
	if f, cn, cd, _, err := data.LoadFeatures(path); err == nil && cn == n*r.copies() && cd == d {
		r.sum.Timing.FeatureCacheHit = true
		r.env.Log.Info("features from cache", "path", path)
		return r.splitCopies(f, n, d)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		r.env.Log.Warn("feature cache unusable, extracting again", "path", path, "err", err)
	}
	start := time.Now()
	all := make([]float32, n*d*r.copies())
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	prog := data.NewProgress(r.env.Progress, "extract", n)
	chw := r.pre.Size()
	var flipped []float32
	for b := range data.Batches(ctx, r.ds, items, r.pre, r.cfg.Backbone.BatchSize, r.cfg.Preprocess.Workers) {
		if b.Err != nil {
			return nil, nil, b.Err
		}
		if err := r.bb.Features(b.Data[:b.N*chw], b.N, all[b.Start*d:(b.Start+b.N)*d]); err != nil {
			return nil, nil, err
		}
		if r.cfg.Backbone.Flip {
			flipped = flipNCHW(b.Data[:b.N*chw], b.N, r.pre.Height, r.pre.Width, flipped)
			off := n * d
			if err := r.bb.Features(flipped, b.N, all[off+b.Start*d:off+(b.Start+b.N)*d]); err != nil {
				return nil, nil, err
			}
		}
		prog.Add(b.N)
		b.Release()
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	prog.Done()
	secs := time.Since(start).Seconds()
	r.sum.Timing.ExtractSeconds = secs
	r.sum.Timing.ExtractImagesPerS = float64(n*r.copies()) / secs
	if err := os.MkdirAll(r.cfg.Cache, 0o755); err != nil {
		return nil, nil, fmt.Errorf("pipeline: feature cache: %w", err)
	}
	meta := map[string]string{"model": r.bb.Hash(), "preprocess": r.pre.Key(), "data": r.ds.Source}
	if err := data.SaveFeatures(path, all, n*r.copies(), d, meta); err != nil {
		r.env.Log.Warn("could not write the feature cache", "path", path, "err", err)
	}
	return r.splitCopies(all, n, d)
}

func (r *runner) copies() int {
	if r.cfg.Backbone.Flip {
		return 2
	}
	return 1
}

func (r *runner) splitCopies(all []float32, n, d int) ([]float32, []float32, error) {
	if r.cfg.Backbone.Flip {
		return all[:n*d], all[n*d:], nil
	}
	return all, nil, nil
}

// flipNCHW mirrors n NCHW images of height h and width w left to right into dst.
func flipNCHW(src []float32, n, h, w int, dst []float32) []float32 {
	if cap(dst) < len(src) {
		dst = make([]float32, len(src))
	}
	dst = dst[:len(src)]
	for row := 0; row < n*3*h; row++ {
		s, t := src[row*w:(row+1)*w], dst[row*w:(row+1)*w]
		for x := range s {
			t[w-1-x] = s[x]
		}
	}
	return dst
}
