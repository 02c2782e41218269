package main

import (
	"context"
	"math"
	"math/rand"
	"runtime"
	"time"

	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/pipeline/train"
)

// The head benchmark's sizes: those of ../shared/reference/ref_heads.py (6 classes x 9 samples,
// 1280 -> 512, 50 training classes, Adam lr 1e-3, weight decay 6e-6).
const (
	benchClassesPerBatch = 6
	benchSamplesPerClass = 9
	benchIn              = 1280
	benchEmb             = 512
	benchClasses         = 50
	benchLR              = 1e-3
	benchWeightDecay     = 6e-6
)

// benchHead times steps head training steps (head.Step + Adam) after a few untimed ones.
func benchHead(ctx context.Context, steps int) (headBench, error) {
	gl := head.DefaultGroupLoss()
	n := benchClassesPerBatch * benchSamplesPerClass
	res := headBench{Steps: steps, Batch: n, In: benchIn, Emb: benchEmb, Classes: benchClasses,
		Optimizer: string(train.OptAdam), Temperature: gl.Temperature, Iterations: gl.Iterations,
		Anchors: gl.AnchorsPerClass, Procs: runtime.GOMAXPROCS(0)}
	rng := rand.New(rand.NewSource(1))
	h, err := head.New(head.Config{In: benchIn, Emb: benchEmb, Classes: benchClasses, DType: head.Float32}, rng)
	if err != nil {
		return res, err
	}
	var params []train.Tensor
	for _, p := range h.Params() {
		params = append(params, train.Tensor{Name: p.Name, Value: p.Value, Grad: p.Grad})
	}
	opt, err := train.NewOptimizer(train.OptAdam, benchWeightDecay)
	if err != nil {
		return res, err
	}
	// A few distinct batches of random unit-length features, 6 random classes x 9 samples each.
	const pool = 8
	xs, ys := make([][]float32, pool), make([][]int, pool)
	for k := range pool {
		x := make([]float32, n*benchIn)
		for i := range n {
			row, s := x[i*benchIn:(i+1)*benchIn], 0.0
			for j := range row {
				row[j] = float32(rng.NormFloat64())
				s += float64(row[j]) * float64(row[j])
			}
			for j := range row {
				row[j] /= float32(math.Sqrt(s))
			}
		}
		classes := rng.Perm(benchClasses)[:benchClassesPerBatch]
		y := make([]int, 0, n)
		for _, c := range classes {
			for range benchSamplesPerClass {
				y = append(y, c)
			}
		}
		xs[k], ys[k] = x, y
	}
	step := func(i int) error {
		if _, err := h.Step(xs[i%pool], n, ys[i%pool], nil, gl); err != nil {
			return err
		}
		opt.Step(params, benchLR)
		return nil
	}
	for i := range 3 { // builds and caches the graph
		if err := step(i); err != nil {
			return res, err
		}
	}
	start := time.Now()
	for i := range steps {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := step(i); err != nil {
			return res, err
		}
	}
	secs := time.Since(start).Seconds()
	res.StepsPerS = float64(steps) / secs
	res.MsPerStep = 1000 * secs / float64(steps)
	return res, nil
}
