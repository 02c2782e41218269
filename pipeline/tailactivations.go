package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/pipeline/data"
)

// The activations at the cut of every image and, when mirrors are used, of its mirror (see
// runner.extract): cached by the prefix model, the preprocessing, the image list, the images'
// bytes and the views.

// activationPath is the activation cache file of the tail s, given the dataset's content key.
func (r *runner) activationPath(s *tailSetup, content string) string {
	key := data.CacheKey("tail-activations", s.prefixSHA, r.pre.Key(), content, "views="+strconv.Itoa(r.copies()))
	path := filepath.Join(r.cfg.Cache, key+".act")
	r.sum.Tail.ActivationCache = path
	return path
}

// cachedActivations returns the cached activations at path, or nil when there are none usable.
func (r *runner) cachedActivations(path string, rows, d int) []float32 {
	acts, _, err := data.LoadFeaturesShape(path, rows, d)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			r.env.Log.Warn("activation cache unusable, extracting again", "path", path, "err", err)
		}
		return nil
	}
	r.sum.Tail.ActivationHit = true
	r.env.Log.Info("activations from cache", "path", path)
	return acts
}

// extractActivations runs the prefix model (the backbone up to the cut) over the images: when the
// features came from the cache, or another model computes them (an int8 backbone run as int8).
func (r *runner) extractActivations(ctx context.Context, s *tailSetup, ao *passOutput) error {
	sess, err := ort.NewSession(s.prefixBytes, ort.Options{Threads: r.cfg.Threads})
	if err != nil {
		return fmt.Errorf("pipeline: the backbone before %q in onnxruntime: %w", s.cut, err)
	}
	defer sess.Close()
	return r.extractPass(ctx, "extract activations", func(in []float32, b int, dst [][]float32) error {
		if err := sess.Run(in, b, dst[0]); err != nil {
			return fmt.Errorf("pipeline: activations at %q: %w", s.cut, err)
		}
		return nil
	}, ao)
}

// extractBoth computes the features and the activations at the cut in one pass: the feature
// model with the cut tensor (dequantized, from an int8 model) as a second output.
func (r *runner) extractBoth(ctx context.Context, s *tailSetup, fo, ao *passOutput) error {
	m, act := r.bb.Cut(), s.cut
	if s.int8 != nil {
		m = onnxpb.Clone(m)
		g := m.GetGraph()
		names := onnxpb.Names(g)
		act = onnxpb.UniqueName(names, s.cut+"_dequantized")
		in := []string{s.cut, s.cutScale}
		if s.cutZero != "" {
			in = append(in, s.cutZero)
		}
		g.Node = append(g.Node, onnxpb.Node("DequantizeLinear", onnxpb.UniqueName(names, act+"_node"), in, []string{act}))
	}
	model, err := onnxpb.Marshal(m)
	if err != nil {
		return fmt.Errorf("pipeline: the feature model: %w", err)
	}
	probe, err := ort.NewProbe(model, []string{backbone.OutputName, act}, ort.Options{Threads: r.cfg.Threads})
	if err != nil {
		return fmt.Errorf("pipeline: the features and the activations at %q in onnxruntime: %w", s.cut, err)
	}
	defer probe.Close()
	return r.extractPass(ctx, "extract features + activations", func(in []float32, b int, dst [][]float32) error {
		outs, err := probe.Run(in, b)
		if err != nil {
			return fmt.Errorf("pipeline: features and activations at %q: %w", s.cut, err)
		}
		for k := range dst {
			if len(outs[k]) != len(dst[k]) {
				return fmt.Errorf("pipeline: output %d of the one-pass extraction holds %d values, want %d", k, len(outs[k]), len(dst[k]))
			}
			copy(dst[k], outs[k])
		}
		return nil
	}, fo, ao)
}

// finishActivations records the extraction of the tail s's activations and caches them (a
// failed write is a warning: the run goes on without the cache).
func (r *runner) finishActivations(s *tailSetup, path string, acts []float32, start time.Time) error {
	ts, n, views := r.sum.Tail, len(r.ds.Items), r.copies()
	ts.ActivationSeconds = time.Since(start).Seconds()
	r.env.Log.Info("activations extracted", "tensor", s.cut, "shape", s.shape, "images", n, "views", views,
		"seconds", ts.ActivationSeconds, "with_features", ts.ActivationsWithFeatures)
	if err := os.MkdirAll(r.cfg.Cache, 0o755); err != nil {
		return fmt.Errorf("pipeline: activation cache: %w", err)
	}
	meta := map[string]string{"prefix_sha256": s.prefixSHA, "tensor": s.cut, "shape": fmt.Sprint(s.shape),
		"views": strconv.Itoa(views), "preprocess": r.pre.Key(), "data": r.ds.Source}
	if err := data.SaveFeatures(path, acts, n*views, prodInts(s.shape), meta); err != nil {
		r.env.Log.Warn("could not write the activation cache", "path", path, "err", err)
	}
	return nil
}
