package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/cputime"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
)

// preprocessOf converts the run config's preprocessing to the data package's.
func preprocessOf(p config.PreprocessConfig) data.Preprocess {
	return data.Preprocess{Height: p.Size[0], Width: p.Size[1], Resize: p.Resize, ResizeShorter: p.ResizeShorter,
		Mean: p.Mean, Std: p.Std, Scale: p.Scale, ChannelOrder: p.ChannelOrder}
}

// benchExtract measures the first n images of cfg.Data, rounds times each way.
func benchExtract(ctx context.Context, cfg config.Config, n, rounds int, logw io.Writer) (extractBench, error) {
	res := extractBench{Model: cfg.Backbone.Path, Batch: cfg.Backbone.BatchSize, Threads: cfg.Threads,
		Workers: cfg.Preprocess.Workers, Rounds: rounds}
	ds, err := data.Load(cfg.Data)
	if err != nil {
		return res, err
	}
	if n > len(ds.Items) {
		return res, fmt.Errorf("%w: --images %d but %q has %d images", errUsage, n, ds.Source, len(ds.Items))
	}
	res.Images = n
	sub := &data.Dataset{Root: ds.Root, Items: ds.Items[:n], Classes: ds.Classes, Source: ds.Source}
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	pre := preprocessOf(cfg.Preprocess)
	if err := pre.Validate(); err != nil {
		return res, fmt.Errorf("%w: %v", config.ErrInvalid, err)
	}
	chw := pre.Size()
	bb, err := backbone.Open(cfg.Backbone.Path, backbone.Options{Feature: cfg.Backbone.Feature,
		LibraryPath: cfg.OnnxRuntime, Threads: cfg.Threads})
	if err != nil {
		return res, err
	}
	defer bb.Close()
	d := bb.Dim()
	model, err := onnxpb.Marshal(bb.Cut())
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	bare, err := ort.NewSession(model, ort.Options{Threads: cfg.Threads})
	if err != nil {
		return res, fmt.Errorf("bench: bare session: %w", err)
	}
	defer bare.Close()

	// Decode once (untimed) for the bare session; this also warms the page cache for every side.
	loader := data.Loader{Preprocess: pre, BatchSize: cfg.Backbone.BatchSize, Workers: cfg.Preprocess.Workers}
	var decoded []data.Batch
	if err := loader.Each(ctx, sub, items, func(b data.Batch) error {
		decoded = append(decoded, b)
		return nil
	}); err != nil {
		return res, err
	}
	out := make([]float32, cfg.Backbone.BatchSize*d)
	for _, b := range []data.Batch{decoded[0], decoded[len(decoded)-1]} { // bind every batch size once
		if err := bare.Run(b.Data[:b.N*chw], b.N, out); err != nil {
			return res, fmt.Errorf("bench: bare session: %w", err)
		}
		if err := bb.Features(b.Data[:b.N*chw], b.N, out); err != nil {
			return res, err
		}
	}

	runBare := func() (float64, error) {
		start := time.Now()
		for _, b := range decoded {
			if err := bare.Run(b.Data[:b.N*chw], b.N, out); err != nil {
				return 0, fmt.Errorf("bench: bare session: %w", err)
			}
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
	runDecode := func() (float64, error) { // the loader alone
		start := time.Now()
		for b := range data.Batches(ctx, sub, items, pre, cfg.Backbone.BatchSize, cfg.Preprocess.Workers) {
			if b.Err != nil {
				return 0, b.Err
			}
			b.Release()
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
	all := make([]float32, n*d)
	runPipeline := func() (float64, error) { // the loop of pipeline/extract.go, without the cache
		start := time.Now()
		for b := range data.Batches(ctx, sub, items, pre, cfg.Backbone.BatchSize, cfg.Preprocess.Workers) {
			if b.Err != nil {
				return 0, b.Err
			}
			if err := bb.Features(b.Data[:b.N*chw], b.N, all[b.Start*d:(b.Start+b.N)*d]); err != nil {
				return 0, err
			}
			b.Release()
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
	// One untimed pass of the pipeline starts its goroutines' threads and fills the buffer pools.
	if _, err := runPipeline(); err != nil {
		return res, err
	}
	res.BareCPU, res.PipelineCPU, res.DecodeCPU = math.Inf(1), math.Inf(1), math.Inf(1)
	var decodeRounds []float64
	for r := range rounds {
		order := []struct {
			name string
			fn   func() (float64, error)
			dst  *[]float64
			cpu  *float64
		}{{"bare onnxruntime", runBare, &res.BareRounds, &res.BareCPU}, {"pipeline", runPipeline, &res.PipelineRounds, &res.PipelineCPU},
			{"decoding alone", runDecode, &decodeRounds, &res.DecodeCPU}}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, s := range order {
			c0 := cputime.Seconds()
			v, err := s.fn()
			if err != nil {
				return res, err
			}
			cpu := (cputime.Seconds() - c0) * 1000 / float64(n)
			*s.dst = append(*s.dst, v)
			*s.cpu = min(*s.cpu, cpu)
			fmt.Fprintf(logw, "bench: round %d: %s %.1f images/s, %.2f CPU ms/image\n", r+1, s.name, v, cpu)
		}
	}
	res.Pipeline, res.Bare, res.Decode = slices.Max(res.PipelineRounds), slices.Max(res.BareRounds), slices.Max(decodeRounds)
	for r := range rounds {
		res.RoundRatios = append(res.RoundRatios, res.PipelineRounds[r]/res.BareRounds[r])
	}
	res.Ratio = median(res.RoundRatios)
	res.BestRatio = res.Pipeline / res.Bare
	res.MeetsGoal = res.Ratio >= 0.9
	fmt.Fprintf(logw, "bench: extraction pipeline %.1f vs bare %.1f images/s (best rounds); ratio %.3f (median of the rounds' %s); decoding alone %.1f images/s, %.2f CPU ms/image\n",
		res.Pipeline, res.Bare, res.Ratio, fmtRatios(res.RoundRatios), res.Decode, res.DecodeCPU)
	return res, nil
}

// median returns the median of v (the mean of the middle two for an even count); v is not changed.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func fmtRatios(v []float64) string {
	parts := make([]string, len(v))
	for i, r := range v {
		parts[i] = strconv.FormatFloat(r, 'f', 3, 64)
	}
	return strings.Join(parts, " ")
}
