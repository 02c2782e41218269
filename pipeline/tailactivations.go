package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline/data"
)

// activations returns the activations at the cut of every item and, when mirrors are used, of
// its mirror: row item*views+v, prod(shape) float32 values each; from the cache when the prefix
// model, the preprocessing, the image list, the images' bytes and the views are unchanged.
func (r *runner) activations(ctx context.Context, s *tailSetup) ([]float32, int, error) {
	ts := r.sum.Tail
	n, d, views := len(r.ds.Items), prodInts(s.shape), r.copies()
	model := s.prefixBytes
	sum := sha256.Sum256(model)
	content, err := r.contentKey(ctx)
	if err != nil {
		return nil, 0, err
	}
	key := data.CacheKey("tail-activations", hex.EncodeToString(sum[:]), r.pre.Key(), content, "views="+strconv.Itoa(views))
	path := filepath.Join(r.cfg.Cache, key+".act")
	ts.ActivationCache = path
	if acts, _, err := data.LoadFeaturesShape(path, n*views, d); err == nil {
		ts.ActivationHit = true
		r.env.Log.Info("activations from cache", "path", path)
		return acts, views, nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		r.env.Log.Warn("activation cache unusable, extracting again", "path", path, "err", err)
	}
	start := time.Now()
	sess, err := ort.NewSession(model, ort.Options{Threads: r.cfg.Threads})
	if err != nil {
		return nil, 0, fmt.Errorf("pipeline: the backbone before %q in onnxruntime: %w", s.cut, err)
	}
	defer sess.Close()
	acts := make([]float32, n*views*d)
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	prog := data.NewProgress(r.env.Progress, "extract activations", n)
	chw := r.pre.Size()
	var buf, flipped []float32
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	loader := data.Loader{Preprocess: r.pre, BatchSize: r.cfg.Backbone.BatchSize, Workers: r.cfg.Preprocess.Workers, SkipBad: r.cfg.OnBadImage == "skip"}
	for b := range loader.Batches(ctx, r.ds, items) {
		if b.Err != nil {
			return nil, 0, r.imageHint(b.Err)
		}
		if b.N > 0 {
			if cap(buf) < b.N*d {
				buf = make([]float32, b.N*d)
			}
			in := b.Data[:b.N*chw]
			for v := 0; v < views; v++ {
				if v == 1 {
					flipped = rowops.Mirror(flipped, in, r.pre.Width)
					in = flipped
				}
				if err := sess.Run(in, b.N, buf[:b.N*d]); err != nil {
					return nil, 0, fmt.Errorf("pipeline: activations at %q: %w", s.cut, err)
				}
				for i, it := range b.Items {
					row := it*views + v
					copy(acts[row*d:(row+1)*d], buf[i*d:(i+1)*d])
				}
			}
		}
		prog.Add(b.N + len(b.Skipped)) // skipped images keep zero rows; the split leaves them out
		b.Release()
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	prog.Done()
	ts.ActivationSeconds = time.Since(start).Seconds()
	r.env.Log.Info("activations extracted", "tensor", s.cut, "shape", s.shape, "images", n, "views", views,
		"seconds", ts.ActivationSeconds)
	if err := os.MkdirAll(r.cfg.Cache, 0o755); err != nil {
		return nil, 0, fmt.Errorf("pipeline: activation cache: %w", err)
	}
	meta := map[string]string{"prefix_sha256": hex.EncodeToString(sum[:]), "tensor": s.cut, "shape": fmt.Sprint(s.shape),
		"views": strconv.Itoa(views), "preprocess": r.pre.Key(), "data": r.ds.Source}
	if err := data.SaveFeatures(path, acts, n*views, d, meta); err != nil {
		r.env.Log.Warn("could not write the activation cache", "path", path, "err", err)
	}
	return acts, views, nil
}
