package main

import (
	"context"
	"fmt"
	"io"

	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/config"
)

// The tail benchmark's classifier has the 40 classes a default CUB-100 run trains on (50 minus 10
// for validation); its first benchTailWarmup steps are not timed.
const (
	benchTailClasses = 40
	benchTailWarmup  = 2
)

// benchTail times our tail training step and, with o.refPython, PyTorch's.
func benchTail(ctx context.Context, o benchOptions, cfg config.Config, logw io.Writer) (*tailBench, error) {
	res := &tailBench{LoadAverage: loadAverage()}
	var err error
	if res.TailBench, err = pipeline.BenchTail(ctx, cfg, benchTailClasses, o.tailSteps, benchTailWarmup); err != nil {
		return nil, err
	}
	t := res.TailBench
	fmt.Fprintf(logw, "bench: tail from %q %v (%d values trained) + head, batch %d: %.1f ms/step, %.1f CPU ms/step (load average %v)\n",
		t.From, t.ActivationShape, t.TailParams, t.Batch, t.MsPerStep, t.CPUMsPerStep, res.LoadAverage)
	if o.refPython == "" {
		return res, nil
	}
	if cfg.Loss.Name != "group" {
		res.ReferenceSkipped = fmt.Sprintf("the reference implements the Group Loss, not %q", cfg.Loss.Name)
		return res, nil
	}
	ref, skipped, err := benchTailReference(ctx, o, cfg, t)
	switch {
	case err != nil:
		return nil, err
	case skipped != "":
		res.ReferenceSkipped = skipped
		fmt.Fprintf(logw, "bench: no reference tail: %s\n", skipped)
	default:
		res.Reference = ref
		fmt.Fprintf(logw, "bench: reference tail (PyTorch %v, %d threads) %.1f ms/step, %.1f CPU ms/step; ours takes %.2fx its time (goal <= 0.8); forward max |diff| %.2g of %.2g (load average %v)\n",
			ref.Raw["torch_version"], ref.Threads, ref.MsPerStep, ref.CPUMsPerStep, ref.Ratio, ref.ForwardMaxDiff, ref.ForwardMax, loadAverage())
	}
	return res, nil
}
