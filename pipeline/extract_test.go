package pipeline

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
)

// TestOnePassExtraction: with tail fine-tuning and empty caches, the features and the activations
// at the cut come out of one onnxruntime pass, with the same values as the two passes they
// replace (the feature model alone, then the prefix model alone, as when the features are cached
// already); a later run takes both from the cache.
func TestOnePassExtraction(t *testing.T) {
	needORT(t)
	cfg := tinyTailConfig(t)
	prepared := func(cache string) *runner {
		t.Helper()
		c := cfg
		c.Cache = cache
		r := &runner{cfg: c, env: RunEnv{Log: slog.New(slog.DiscardHandler), Progress: io.Discard}, sum: &Summary{}}
		if err := r.prepare(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.bb.Close() })
		return r
	}
	ctx := context.Background()
	one := prepared(filepath.Join(t.TempDir(), "one"))
	a, err := one.extract(ctx, one.tail)
	if err != nil {
		t.Fatal(err)
	}
	if !one.sum.Tail.ActivationsWithFeatures || one.sum.Timing.FeatureCacheHit || one.sum.Tail.ActivationHit {
		t.Fatalf("empty caches: activations with features %v, cache hits %v %v; want one fresh pass",
			one.sum.Tail.ActivationsWithFeatures, one.sum.Timing.FeatureCacheHit, one.sum.Tail.ActivationHit)
	}

	two := prepared(filepath.Join(t.TempDir(), "two"))
	if _, _, err := two.features(ctx); err != nil { // the features alone, cached
		t.Fatal(err)
	}
	two.sum = &Summary{Tail: two.sum.Tail}
	b, err := two.extract(ctx, two.tail)
	if err != nil {
		t.Fatal(err)
	}
	if two.sum.Tail.ActivationsWithFeatures || !two.sum.Timing.FeatureCacheHit || two.sum.Tail.ActivationHit {
		t.Fatalf("cached features: activations with features %v, cache hits %v %v; want the prefix pass alone",
			two.sum.Tail.ActivationsWithFeatures, two.sum.Timing.FeatureCacheHit, two.sum.Tail.ActivationHit)
	}
	n, views := len(one.ds.Items), 2
	if len(a.acts) != n*views*prodInts(one.tail.shape) || len(a.feats) != n*one.bb.Dim() || a.flips == nil || a.views != views {
		t.Fatalf("one pass: %d activations, %d features, views %d", len(a.acts), len(a.feats), a.views)
	}
	for _, c := range []struct {
		name string
		x, y []float32
	}{{"features", a.feats, b.feats}, {"mirrors' features", a.flips, b.flips}, {"activations", a.acts, b.acts}} {
		if !slices.Equal(c.x, c.y) {
			t.Errorf("%s of the one pass differ from those of the passes alone", c.name)
		}
	}

	again := prepared(one.cfg.Cache)
	c, err := again.extract(ctx, again.tail)
	if err != nil {
		t.Fatal(err)
	}
	if !again.sum.Timing.FeatureCacheHit || !again.sum.Tail.ActivationHit || !slices.Equal(c.acts, a.acts) || !slices.Equal(c.feats, a.feats) {
		t.Errorf("second run: cache hits %v %v, same values %v %v", again.sum.Timing.FeatureCacheHit, again.sum.Tail.ActivationHit,
			slices.Equal(c.acts, a.acts), slices.Equal(c.feats, a.feats))
	}
}
