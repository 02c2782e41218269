package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/metrics"
	"github.com/grouploss/pipeline/pipeline/train"
)

// trainable is a model that runner.train trains.
type trainable interface {
	model
	train.Model
	// setTensors lists the parameters as the tensors Fit trains, once the head is built.
	setTensors()
	checkpoint(epoch int, score float64, opt train.Optimizer, cfg config.Config) *Checkpoint
}

// problem is one model to train, as data: what differs between the head alone and the tail +
// head (gonum's optimize.Problem plays this part).
type problem struct {
	model trainable
	// head is the model's feature transform and head, built by runner.train on the training
	// features of its source.
	head *headModel
	// inputs returns the sampler's batch function and the values per training sample, given
	// the transformed features of the training images (the head's input).
	inputs func(fitX []float32) (train.Batch, int)
	opt    train.Optimizer
	what   string // progress label
	// logEpoch, when set, gives extra key-value pairs for an epoch's log line.
	logEpoch func(st train.EpochStats) []any
}

// train is the one training call of a run, for every kind of model: it builds the head on the
// training features (head.init), then trains with the class sampler, model selection on the
// validation classes, checkpoints and --resume (fit).
func (r *runner) train(ctx context.Context, p problem) error {
	cfg, split, m := r.cfg, r.split, p.head
	classOf := map[int]int{}
	for i, l := range split.fit {
		classOf[l] = i
	}
	labels := make([]int, len(split.fitIdx))
	for i, k := range split.fitIdx {
		labels[i] = classOf[r.ds.Items[k].Label]
	}
	fitX, err := m.src.items(split.fitIdx, false)
	if err != nil {
		return err
	}
	if err := m.init(fitX, labels, cfg.Head, cfg.Seed, r.restoring()); err != nil {
		return err
	}
	p.model.setTensors()
	batch, dim := p.inputs(fitX)
	sampler, notes, err := train.NewClassSampler(labels, cfg.Sampler.ClassesPerBatch, cfg.Sampler.SamplesPerClass,
		func(c int) string { return r.ds.Classes[split.fit[c]] })
	if err != nil {
		return err
	}
	for _, note := range notes {
		r.env.Log.Warn("sampler: " + note)
	}
	r.sum.Training.SamplerNotes = notes
	r.sum.Training.BatchSize = sampler.BatchSize()
	var hooks train.Hooks
	r.sum.Training.Selection = "none (last epoch)"
	if len(split.val) > 0 {
		r.sum.Training.Selection = "map_at_r on validation classes"
		valY := r.ds.Labels(split.valIdx)
		hooks.Validate = func(epoch int) (float64, error) {
			e, err := p.model.embedItems(split.valIdx)
			if err != nil {
				return 0, err
			}
			res, err := metrics.Evaluate(e, len(split.valIdx), p.model.dim(), valY, metrics.Options{SkipClustering: true})
			if err != nil {
				return 0, err
			}
			r.env.Log.Debug("validation", "epoch", epoch, "recall_at_1", res.RecallAt1, "map_at_r", res.MAPAtR)
			return res.MAPAtR, nil
		}
	}
	base := func() *Checkpoint {
		return &Checkpoint{Center: m.center, Normalize: m.normalize, FlipTTA: m.flipTTA, Classes: m.classes, Config: cfg}
	}
	return r.fit(ctx, fitJob{model: p.model, opt: p.opt, sampler: sampler, batch: batch, labels: labels, dim: dim, hooks: hooks,
		what: p.what, logEpoch: p.logEpoch, center: m.center, base: base})
}

// restoring reports whether the run resumes from a last.ckpt, whose parameters replace the
// initialization.
func (r *runner) restoring() bool {
	if !r.resume {
		return false
	}
	_, err := os.Stat(filepath.Join(r.dir, lastCheckpointFile))
	return err == nil
}

// fitJob is a built model's training: what fit hands to train.Fit.
type fitJob struct {
	model   trainable
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
		ReloadBestAfter: cfg.Optimizer.ReloadBestAfter, PretrainEpochs: cfg.Loss.PretrainEpochs, EMA: cfg.Optimizer.EMA}
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
