package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/metrics"
)

// ErrConfig marks an invalid configuration (exit code 2).
var ErrConfig = errors.New("pipeline: invalid config")

// RunEnv is where a run logs and draws progress.
type RunEnv struct {
	Log      *slog.Logger
	Progress io.Writer
}

// Run is `pipeline run`: extract features with the frozen backbone, train the head with the Group
// Loss, evaluate raw and trained embeddings on the held-out classes, export backbone + head as one
// ONNX model and check it in onnxruntime. The summary is returned (and written as metrics.json)
// also when a later step fails, with what was done up to there.
func Run(ctx context.Context, cfg Config, env RunEnv) (*Summary, error) {
	start := time.Now()
	if env.Log == nil {
		env.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if env.Progress == nil {
		env.Progress = io.Discard
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if cfg.Out == "" {
		cfg.Out = filepath.Join("runs", time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("pipeline: run folder: %w", err)
	}
	if err := writeYAML(filepath.Join(cfg.Out, "config.yaml"), cfg); err != nil {
		return nil, err
	}
	sum := &Summary{RunDir: cfg.Out, Version: Version}
	r := &runner{cfg: cfg, env: env, sum: sum}
	err := r.run(ctx)
	sum.Timing.TotalSeconds = time.Since(start).Seconds()
	if werr := writeJSON(filepath.Join(cfg.Out, "metrics.json"), sum); werr != nil && err == nil {
		err = werr
	}
	return sum, err
}

type runner struct {
	cfg Config
	env RunEnv
	sum *Summary
	bb  *backbone.Backbone
	ds  *data.Dataset
	pre data.Preprocess
}

func (r *runner) run(ctx context.Context) error {
	cfg, log := r.cfg, r.env.Log
	ds, err := data.Load(cfg.Data)
	if err != nil {
		return err
	}
	r.ds = ds
	pre, err := cfg.Preprocess.toData()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	r.pre = pre
	split, err := splitClasses(ds, cfg.TrainClasses, cfg.ValidationClasses, cfg.Seed)
	if err != nil {
		return err
	}
	r.sum.Data = DataSummary{Source: ds.Source, Images: len(ds.Items), Classes: len(ds.Classes),
		TrainClasses: len(split.fit) + len(split.val), ValidationClasses: len(split.val), EvalClasses: len(split.eval),
		TrainImages: len(split.fitIdx) + len(split.valIdx), EvalImages: len(split.evalIdx)}
	log.Info("dataset", "source", ds.Source, "images", len(ds.Items), "classes", len(ds.Classes),
		"train_classes", r.sum.Data.TrainClasses, "validation_classes", len(split.val), "eval_classes", len(split.eval))

	bb, err := backbone.Open(cfg.Backbone.Path, backbone.Options{Feature: cfg.Backbone.Feature,
		LibraryPath: cfg.OnnxRuntime, Threads: cfg.Threads})
	if err != nil {
		return err
	}
	defer bb.Close()
	r.bb = bb
	cpu := backbone.CPU()
	r.sum.Machine = Machine{CPU: cpu.Model, AVX2: cpu.AVX2, AVX512VNNI: cpu.AVX512VNNI, AVXVNNI: cpu.AVXVNNI,
		Cores: runtime.NumCPU(), OnnxRuntime: backbone.RuntimeVersion(), GoVersion: runtime.Version()}
	if w := backbone.Int8Warning(bb.Info(), cpu); w != "" {
		log.Warn(w)
		r.sum.Warnings = append(r.sum.Warnings, w)
	}
	r.sum.Data.FeatureDim = bb.Dim()
	r.sum.Data.FeatureTensor = bb.CutInfo().Feature

	feats, flips, err := r.features(ctx)
	if err != nil {
		return err
	}
	d := bb.Dim()

	// Baseline: the raw backbone features of the evaluated classes.
	evalFeats := gather(feats, d, split.evalIdx)
	evalLabels := ds.Labels(split.evalIdx)
	mopt := metrics.Options{KMeansRestarts: cfg.Eval.KMeansRestarts, Seed: cfg.Seed, Workers: 2}
	if r.sum.Baseline, err = metrics.Evaluate(evalFeats, len(split.evalIdx), d, evalLabels, mopt); err != nil {
		return err
	}
	log.Info("baseline (raw features)", "recall_at_1", r.sum.Baseline.RecallAt1, "nmi", r.sum.Baseline.NMI)

	model, err := r.trainHead(ctx, feats, flips, split)
	if err != nil {
		return err
	}
	emb := model.embed(evalFeats, len(split.evalIdx))
	if r.sum.Trained, err = metrics.Evaluate(emb, len(split.evalIdx), model.dim(), evalLabels, mopt); err != nil {
		return err
	}
	log.Info("trained", "recall_at_1", r.sum.Trained.RecallAt1, "nmi", r.sum.Trained.NMI)
	return r.export(ctx, model, split.evalIdx)
}

// classSplit is the partition of a dataset's classes: fit (trained on), val (held out of the
// training classes for model selection) and eval (never seen in training).
type classSplit struct {
	fit, val, eval          []int
	fitIdx, valIdx, evalIdx []int
}

// splitClasses trains on the first trainClasses labels (0: half of them) and evaluates on the
// rest; valClasses of the training classes, chosen with seed, are held out for model selection.
func splitClasses(ds *data.Dataset, trainClasses, valClasses int, seed int64) (classSplit, error) {
	var s classSplit
	counts := ds.ClassCounts()
	var present []int
	for l, c := range counts {
		if c > 0 {
			present = append(present, l)
		}
	}
	if trainClasses == 0 {
		trainClasses = len(present) / 2
	}
	if trainClasses < 2 {
		return s, fmt.Errorf("pipeline: %d training classes in %q; the Group Loss needs at least 2", trainClasses, ds.Source)
	}
	if trainClasses >= len(present) {
		return s, fmt.Errorf("pipeline: train_classes %d leaves no class of the %d in %q to evaluate on", trainClasses, len(present), ds.Source)
	}
	trainL := append([]int(nil), present[:trainClasses]...)
	s.eval = present[trainClasses:]
	if valClasses > 0 && trainClasses-valClasses < 2 {
		return s, fmt.Errorf("pipeline: %d validation classes leave fewer than 2 of the %d training classes to train on", valClasses, trainClasses)
	}
	perm := rand.New(rand.NewSource(seed)).Perm(len(trainL))
	isVal := map[int]bool{}
	for _, p := range perm[:valClasses] {
		isVal[trainL[p]] = true
	}
	for _, l := range trainL {
		if isVal[l] {
			s.val = append(s.val, l)
		} else {
			s.fit = append(s.fit, l)
		}
	}
	role := map[int]*[]int{}
	for _, l := range s.fit {
		role[l] = &s.fitIdx
	}
	for _, l := range s.val {
		role[l] = &s.valIdx
	}
	for _, l := range s.eval {
		role[l] = &s.evalIdx
	}
	for i, it := range ds.Items {
		dst := role[it.Label]
		*dst = append(*dst, i)
	}
	return s, nil
}

// gather copies the rows idx of the n x d matrix x.
func gather(x []float32, d int, idx []int) []float32 {
	out := make([]float32, len(idx)*d)
	for i, k := range idx {
		copy(out[i*d:(i+1)*d], x[k*d:(k+1)*d])
	}
	return out
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("pipeline: %s: %w", filepath.Base(path), err)
	}
	return onnxpb.WriteFileAtomic(path, append(b, '\n'))
}

func writeYAML(path string, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("pipeline: %s: %w", filepath.Base(path), err)
	}
	return onnxpb.WriteFileAtomic(path, b)
}
