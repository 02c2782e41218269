package pipeline

import (
	"errors"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/pipeline/config"
)

// TestConfigSizeBounds: sizes that crashed the Go runtime ("fatal error: runtime: out of memory")
// are config errors naming the key.
func TestConfigSizeBounds(t *testing.T) {
	for _, c := range []struct {
		key string
		set func(*config.Config)
	}{
		{"head.embedding_dim 1000000000", func(c *config.Config) { c.Head.EmbeddingDim = 1e9 }},
		{"threads 100000", func(c *config.Config) { c.Threads = 100000 }},
		{"eval.kmeans_restarts 1000000000", func(c *config.Config) { c.Eval.KMeansRestarts = 1e9 }},
		{"preprocess.workers 100000", func(c *config.Config) { c.Preprocess.Workers = 100000 }},
		{"backbone.batch_size 10000000", func(c *config.Config) { c.Backbone.BatchSize = 1e7 }},
	} {
		cfg := config.DefaultConfig()
		cfg.Data, cfg.Backbone.Path = "d", "m.onnx"
		c.set(&cfg)
		if err := cfg.Validate(); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), c.key+" is over the limit") {
			t.Errorf("%s: %v", c.key, err)
		}
	}
}

// TestMemoryNeeds: the memory implied by the images, the model's feature size and the head is
// checked before extraction.
func TestMemoryNeeds(t *testing.T) {
	const budget = 12 << 30 // half of 24 GiB
	if err := memoryNeeds(5902, 1280, 512, 2, true, budget); err != nil {
		t.Fatalf("the CUB-100 default: %v", err)
	}
	for _, c := range []struct {
		n, d, emb int
		pca       bool
		want      string
	}{
		{5902, 200704, 512, true, "head.init pca on 200704-d features"}, // CUB-100 cut at a 200704-d Flatten
		{50000, 200704, 512, false, "the features of 50000 images x 200704 values"},
		{5902, 1280, 1 << 30, false, "a head of 1280 x 1073741824 weights"},
	} {
		err := memoryNeeds(c.n, c.d, c.emb, 2, c.pca, budget)
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), c.want) || Hint(err) == "" {
			t.Errorf("n=%d d=%d emb=%d: %v, want config.ErrInvalid saying %q with a hint", c.n, c.d, c.emb, err, c.want)
		}
	}
	if b := memoryBudget(); b < 1<<30 {
		t.Fatalf("memory budget %d", b)
	}
}
