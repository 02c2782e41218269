package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/train"
)

// checkpointer is a model whose best epoch is saved as checkpoint.ckpt.
type checkpointer interface {
	train.Model
	checkpoint(epoch int, score float64, opt train.Optimizer, cfg Config) *Checkpoint
}

// fitJob is what differs between the head-only and the tail + head training runs.
type fitJob struct {
	model   checkpointer
	opt     train.Optimizer
	sampler train.Sampler
	batch   train.Batch
	labels  []int
	dim     int
	hooks   train.Hooks // Validate set by the caller; fit adds Best, Epoch and the resume hooks
	what    string      // progress label
	// logEpoch gives extra key-value pairs for an epoch's log line.
	logEpoch func(st train.EpochStats) []any
	// center and base describe the model for last.ckpt (see runner.resumable).
	center []float32
	base   func() *Checkpoint
}

// fit trains j.model with train.Fit under the run's settings: checkpoint.ckpt at each best epoch,
// last.ckpt for --resume, progress and one log line per epoch; it records the history and timing
// in the run summary.
func (r *runner) fit(ctx context.Context, j fitJob) error {
	cfg := r.cfg
	hooks := j.hooks
	ckpt := filepath.Join(r.dir, "checkpoint.ckpt")
	hooks.Best = func(epoch int, score float64) error {
		return SaveCheckpoint(ckpt, j.model.checkpoint(epoch, score, j.opt, cfg))
	}
	prog := data.NewProgress(r.env.Progress, j.what, cfg.Optimizer.Epochs)
	defer prog.Done()
	hooks.Epoch = func(st train.EpochStats) {
		prog.Add(1)
		kv := []any{"epoch", st.Epoch, "loss", st.Loss, "validation", st.Score, "lr", st.LR}
		if j.logEpoch != nil {
			kv = append(kv, j.logEpoch(st)...)
		}
		kv = append(kv, "seconds", st.Seconds, "pretrain", st.Pretrain, "reload_best", st.ReloadBest)
		r.env.Log.Info("epoch", kv...)
	}
	fitOpts := train.Options{Epochs: cfg.Optimizer.Epochs,
		LR: cfg.Optimizer.LR, LRSteps: cfg.Optimizer.LRSteps, LRGamma: cfg.Optimizer.LRGamma,
		AnchorsPerClass: cfg.Loss.AnchorsPerClass, Seed: cfg.Seed,
		ReloadBestAfter: cfg.Optimizer.ReloadBestAfter, PretrainEpochs: cfg.Loss.PretrainEpochs}
	flush, err := r.resumable(j.model.Tensors(), j.center, j.base, &hooks, &fitOpts)
	if err != nil {
		return err
	}
	if after := r.env.afterEpoch; after != nil {
		save := hooks.Checkpoint
		hooks.Checkpoint = func(st train.State) error {
			if err := save(st); err != nil {
				return err
			}
			return after(st.History)
		}
	}
	prog.Add(r.sum.Training.ResumedFromEpoch)
	res, err := train.Fit(ctx, j.model, j.opt, j.sampler, j.batch, j.labels, j.dim, fitOpts, hooks)
	if ferr := flush(); ferr != nil && err == nil {
		err = ferr
	}
	r.sum.Training.History = res.History
	r.sum.Training.BestEpoch, r.sum.Training.BestScore, r.sum.Training.Steps = res.BestEpoch, res.BestScore, res.Steps
	r.sum.Timing.TrainSeconds, r.sum.Timing.Epochs = res.Seconds, res.Epochs
	if trained := res.Epochs - r.sum.Training.ResumedFromEpoch; trained > 0 {
		r.sum.Timing.SecondsPerEpoch = res.Seconds / float64(trained)
	}
	if err != nil {
		return fmt.Errorf("%w%s", err, checkpointsKept(ckpt, filepath.Join(r.dir, lastCheckpointFile)))
	}
	return nil
}

// checkpointsKept says which of the best and the last epoch's checkpoints exist, for an error of
// training: only files that are there are named (a run that failed in its first epoch has none).
func checkpointsKept(best, last string) string {
	var kept []string
	if _, err := os.Stat(best); err == nil {
		kept = append(kept, "the best checkpoint so far is "+best)
	}
	if _, err := os.Stat(last); err == nil {
		kept = append(kept, "the last completed epoch's "+last)
	}
	if len(kept) == 0 {
		return " (no epoch completed: no checkpoint was written)"
	}
	return " (" + strings.Join(kept, ", ") + ")"
}
