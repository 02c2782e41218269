package main

import (
	"time"

	"github.com/grouploss/pipeline/internal/cputime"
	"github.com/grouploss/pipeline/internal/matmul"
	"github.com/grouploss/pipeline/pipeline/metrics"
)

// evalStage is the cost of one stage of metrics.Evaluate.
type evalStage struct {
	Stage   metrics.Stage `json:"stage"`
	Seconds float64       `json:"seconds"`
	// CPUSeconds is the process's CPU time in the stage: on a machine shared with other work,
	// CPUSeconds / cores estimates the wall time the stage would take alone.
	CPUSeconds float64 `json:"cpu_seconds"`
	// ProductGFLOP is the work of the stage's float32 matrix products (internal/matmul).
	ProductGFLOP float64 `json:"product_gflop"`
}

// timeStages returns a metrics progress function that appends each stage's wall time and
// matrix-product work to *stages, then passes the call on to next (may be nil).
func timeStages(stages *[]evalStage, next func(metrics.Stage, int, int)) func(metrics.Stage, int, int) {
	var start time.Time
	var flops, cpu float64
	return func(stage metrics.Stage, done, total int) {
		if done == 0 {
			start, flops, cpu = time.Now(), matmul.FlopsDone(), cputime.Seconds()
		}
		if done == total {
			*stages = append(*stages, evalStage{Stage: stage, Seconds: time.Since(start).Seconds(),
				CPUSeconds: cputime.Seconds() - cpu, ProductGFLOP: (matmul.FlopsDone() - flops) / 1e9})
		}
		if next != nil {
			next(stage, done, total)
		}
	}
}
