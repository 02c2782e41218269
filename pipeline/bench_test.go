package pipeline

import (
	"context"
	"io"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/train"
)

// The speed goals of `pipeline run` (see also `pipeline bench`, which runs both extraction
// measurements in one process, alternating, and compares the head with the PyTorch reference):
//
//   - BenchmarkExtractPipeline (decoding by the data package's goroutines while onnxruntime runs,
//     through runner.features) within 10% of BenchmarkExtractBareORT (a bare onnxruntime session
//     fed already decoded tensors), on the same 256 CUB images, batch 32, the shared int8
//     MobileNetV2, 2 onnxruntime threads and the default 2 decoding workers;
//   - BenchmarkHeadStep at least as many steps/s as scripts/bench_ref_head.py.
//
// Run them with `go test -run '^$' -bench 'Extract|HeadStep' -benchtime 3x ./pipeline`.

const benchImages = 256

// benchExtractConfig is the default run config on the shared data, with the first benchImages
// images of CUB-100 as the dataset and a throw-away feature cache.
func benchExtractConfig(b *testing.B) (config.Config, *data.Dataset, data.Preprocess) {
	shared := sharedDir(b)
	needORT(b)
	cfg := config.DefaultConfig()
	cfg.Data = filepath.Join(shared, "data", "cub100")
	cfg.Backbone.Path = filepath.Join(shared, "models", "mobilenetv2-12-int8.onnx")
	cfg.Cache = b.TempDir()
	ds, err := data.Load(cfg.Data)
	if err != nil {
		b.Fatal(err)
	}
	if len(ds.Items) < benchImages {
		b.Fatalf("%q has %d images, want %d", ds.Source, len(ds.Items), benchImages)
	}
	ds.Items = ds.Items[:benchImages]
	pre, err := cfg.Preprocess.ToData()
	if err != nil {
		b.Fatal(err)
	}
	return cfg, ds, pre
}

func benchOpen(b *testing.B, cfg config.Config) *backbone.Backbone {
	bb, err := backbone.Open(cfg.Backbone.Path, backbone.Options{Feature: cfg.Backbone.Feature,
		LibraryPath: cfg.OnnxRuntime, Threads: cfg.Threads})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bb.Close() })
	return bb
}

// BenchmarkExtractPipeline measures runner.features, the extraction of `pipeline run`: images
// decoded and preprocessed by data.Batches' workers while onnxruntime computes the previous
// batch. Each iteration extracts benchImages images (and their mirrors) into an empty feature
// cache; the reported images/s use the extraction time the runner records (the cache write after
// it is excluded).
func BenchmarkExtractPipeline(b *testing.B) {
	cfg, ds, pre := benchExtractConfig(b)
	r := &runner{cfg: cfg, env: RunEnv{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Progress: io.Discard},
		sum: &Summary{}, bb: benchOpen(b, cfg), ds: ds, pre: pre}
	ctx := context.Background()
	extract := func() float64 {
		if err := os.RemoveAll(cfg.Cache); err != nil {
			b.Fatal(err)
		}
		r.sum.Timing.FeatureCacheHit = false
		feats, _, err := r.features(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if r.sum.Timing.FeatureCacheHit || len(feats) != benchImages*r.bb.Dim() {
			b.Fatalf("cache hit %v, %d features, want a fresh extraction of %d x %d", r.sum.Timing.FeatureCacheHit,
				len(feats), benchImages, r.bb.Dim())
		}
		return r.sum.Timing.ExtractSeconds
	}
	extract() // warm-up: page cache, onnxruntime's tensors for both batch sizes
	b.ResetTimer()
	var secs float64
	for i := 0; i < b.N; i++ {
		secs += extract()
	}
	// Each image and its mirror (the default flip) are two forward passes, counted as two images as
	// metrics.json's extract_images_per_s counts them, so the figure compares with the bare session's.
	b.ReportMetric(float64(benchImages*r.copies()*b.N)/secs, "images/s")
}

// BenchmarkExtractBareORT measures a bare onnxruntime session (the backbone's cut model, same
// threads and batch size) on the same images, decoded beforehand: the upper bound for
// BenchmarkExtractPipeline.
func BenchmarkExtractBareORT(b *testing.B) {
	cfg, ds, pre := benchExtractConfig(b)
	bb := benchOpen(b, cfg)
	model, err := onnxpb.Marshal(bb.Cut())
	if err != nil {
		b.Fatal(err)
	}
	bb.Close()
	sess, err := ort.NewSession(model, ort.Options{Threads: cfg.Threads})
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	items := make([]int, benchImages)
	for i := range items {
		items[i] = i
	}
	var batches []data.Batch
	loader := data.Loader{Preprocess: pre, BatchSize: cfg.Backbone.BatchSize, Workers: cfg.Preprocess.Workers}
	if err := loader.Each(context.Background(), ds, items, func(bt data.Batch) error {
		batches = append(batches, bt)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	d, chw := bb.Dim(), pre.Size()
	out := make([]float32, benchImages*d)
	run := func() {
		for _, bt := range batches {
			if err := sess.Run(bt.Data[:bt.N*chw], bt.N, out[bt.Start*d:(bt.Start+bt.N)*d]); err != nil {
				b.Fatal(err)
			}
		}
	}
	run() // warm-up: binds the tensors of both batch sizes
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		run()
	}
	b.ReportMetric(float64(benchImages*b.N)/b.Elapsed().Seconds(), "images/s")
}

// BenchmarkHeadStep measures one head training step at the reference's sizes (6 classes x 9
// samples, 1280 -> 512, 50 classes, Group Loss T=24, 1 iteration, 2 anchors per class): head.Step
// plus an Adam update, on random unit-length features. One op is 10 steps (so that `make bench`'s
// -benchtime 3x times 30); read ms/step. It needs neither onnxruntime nor ../shared.
func BenchmarkHeadStep(b *testing.B) {
	const in, emb, classes, cpb, spc, stepsPerOp = 1280, 512, 50, 6, 9, 10
	const n = cpb * spc
	rng := rand.New(rand.NewSource(3))
	h, err := head.New(head.Config{In: in, Emb: emb, Classes: classes, DType: head.Float32}, rng)
	if err != nil {
		b.Fatal(err)
	}
	var params []train.Tensor
	for _, p := range h.Params() {
		params = append(params, train.Tensor{Name: p.Name, Value: p.Value, Grad: p.Grad})
	}
	opt, err := train.NewOptimizer(train.OptAdam, 6e-6)
	if err != nil {
		b.Fatal(err)
	}
	x := make([]float32, n*in)
	for i := range n {
		row := x[i*in : (i+1)*in]
		for j := range row {
			row[j] = float32(rng.NormFloat64())
		}
	}
	rowops.L2Normalize(x, in)
	labels := make([]int, n)
	for i := range labels {
		labels[i] = 8 * (i / spc) // classes 0, 8, ..., 40
	}
	gl := head.DefaultGroupLoss()
	step := func() {
		if _, err := h.Step(x, n, labels, nil, gl); err != nil {
			b.Fatal(err)
		}
		opt.Step(params, 1e-3)
	}
	step() // builds the graph
	b.ResetTimer()
	for i := 0; i < b.N*stepsPerOp; i++ {
		step()
	}
	secs, steps := b.Elapsed().Seconds(), float64(b.N*stepsPerOp)
	b.ReportMetric(steps/secs, "steps/s")
	b.ReportMetric(1000*secs/steps, "ms/step")
}
