package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/atomicfile"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/metrics"
)

// RunEnv is where a run logs and draws progress.
type RunEnv struct {
	Log      *slog.Logger
	Progress io.Writer
	// baselines, when set, shares the raw features' metrics between the runs of a comparison
	// (see Compare).
	baselines *baselineCache
	// afterEpoch, when set, is called after each training epoch; its error stops training
	// (Tune stops poor trials with it).
	afterEpoch epochHook
}

// Run is `pipeline run`: extract features with the frozen backbone, train the head with the Group
// Loss, evaluate raw and trained embeddings on the held-out classes, export backbone + head as one
// ONNX model and check it in onnxruntime.
//
// The run folder (cfg.Out) is touched only after the config, the dataset, the class split and the
// backbone have been checked, so those errors leave no file behind. An existing non-empty run
// folder is refused (config.ErrInvalid) unless cfg.Force is set; then the new run is built in a sibling
// folder "<out>.partial-*" that replaces the old one only when the run succeeds: a failed or
// interrupted run leaves the old folder untouched and its own files in the sibling, which the
// error names. Every file is written atomically. Once the run folder exists, the summary is
// returned and written as metrics.json (with status "ok", "failed" or "interrupted") also when a
// later step fails, with what was done up to there. Errors may carry a hint (see Hint).
func Run(ctx context.Context, cfg config.Config, env RunEnv) (*Summary, error) {
	return runIn(ctx, cfg, env, "")
}

// runIn is Run, or with resume set Resume: the run continues in the folder resume.
func runIn(ctx context.Context, cfg config.Config, env RunEnv, resume string) (*Summary, error) {
	start := time.Now()
	if env.Log == nil {
		env.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if env.Progress == nil {
		env.Progress = io.Discard
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Out == "" {
		cfg.Out = filepath.Join("runs", time.Now().Format("20060102-150405"))
	}
	var reuse bool
	var err error
	if resume != "" { // the run folder is reused in place; a --force staging folder replaces its target
		target := stagedTarget(resume, cfg.Out)
		cfg.Out, reuse = resume, target != ""
		if reuse {
			cfg.Out = target
		}
	} else if reuse, err = checkRunFolder(cfg.Out, cfg.Force); err != nil {
		return nil, err
	} else if reuse {
		uses := map[string]string{"data": cfg.Data, "backbone": cfg.Backbone.Path, "cache": cfg.Cache}
		if err := checkReplaceable(cfg.Out, uses); err != nil {
			return nil, err
		}
	}
	sum := &Summary{Version: Version, Status: "failed"}
	r := &runner{cfg: cfg, env: env, sum: sum, resume: resume != ""}
	if err := r.prepare(); err != nil {
		return nil, err
	}
	defer r.bb.Close()
	r.dir = cfg.Out
	_, statErr := os.Stat(cfg.Out)
	created := errors.Is(statErr, fs.ErrNotExist) // by this run: a config error removes it again
	if resume == "" && !reuse {
		if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
			return nil, fmt.Errorf("pipeline: run folder: %w", err)
		}
	}
	// Claim the folder before writing to it (with --force, the folder replaced at the end): a
	// second run on the same --out fails here. A new run must find its folder still empty once
	// it holds it (another run may have filled it meanwhile).
	claim := cfg.Out
	if resume != "" {
		claim = resume
	}
	release, err := claimRunFolder(claim)
	if err != nil {
		return nil, err
	}
	defer release()
	if resume != "" {
		r.dir = resume
	} else if reuse {
		if r.dir, err = os.MkdirTemp(filepath.Dir(cfg.Out), filepath.Base(cfg.Out)+".partial-"); err != nil {
			return nil, fmt.Errorf("pipeline: run folder: %w", err)
		}
		r.dir = filepath.Clean(r.dir)
		if err := os.Chmod(r.dir, 0o755); err != nil {
			return nil, fmt.Errorf("pipeline: run folder: %w", err)
		}
	} else if _, err := checkRunFolder(r.dir, false); err != nil {
		return nil, err
	}
	sum.RunDir = r.dir
	if resume == "" {
		if err := writeYAML(filepath.Join(r.dir, "config.yaml"), r.cfg); err != nil { // as adapted to the data
			return nil, err
		}
	}
	err = r.run(ctx)
	if errors.Is(err, config.ErrInvalid) && resume == "" { // config errors leave no file behind, also late ones
		discardRunFolder(r.dir, created || reuse)
		return nil, err
	}
	if reuse && err == nil { // the paths the files will have once the staged folder replaces the old one
		sum.RunDir, sum.Export.Path = cfg.Out, filepath.Join(cfg.Out, filepath.Base(sum.Export.Path))
		for i, v := range sum.Export.Variants {
			sum.Export.Variants[i].Path = filepath.Join(cfg.Out, filepath.Base(v.Path))
		}
		if sum.Report != "" {
			sum.Report = filepath.Join(cfg.Out, reportFile)
		}
	}
	sum.Timing.TotalSeconds = time.Since(start).Seconds()
	switch {
	case err == nil:
		sum.Status = "ok"
	case ctx.Err() != nil:
		sum.Status, sum.Error = "interrupted", err.Error()
	default:
		sum.Error = err.Error()
	}
	if werr := writeJSON(filepath.Join(r.dir, "metrics.json"), sum); werr != nil && err == nil {
		err = werr
	}
	if err == nil { // a finished run is not resumed: its per-epoch checkpoint is no longer needed
		os.Remove(filepath.Join(r.dir, lastCheckpointFile))
	}
	if reuse {
		if err == nil {
			err = replaceFolder(r.dir, cfg.Out)
		}
		if err != nil {
			err = fmt.Errorf("%w (this run's files are in %q; the previous run in %q is unchanged)", err, r.dir, cfg.Out)
		}
	}
	return sum, err
}

// checkRunFolder reports whether out is an existing non-empty folder, which is an error unless
// force is set (see checkReplaceable for what force may replace).
func checkRunFolder(out string, force bool) (reuse bool, err error) {
	entries, err := os.ReadDir(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, withHint(fmt.Errorf("%w: run folder: %w", config.ErrInvalid, err), "pass a folder as --out")
	case len(entries) == 0:
		return false, nil
	case !force:
		return false, withHint(fmt.Errorf("%w: run folder %q is not empty (it holds %q)", config.ErrInvalid, out, entries[0].Name()),
			"choose a new --out folder, or pass --force to replace it; with --force the old files stay until the new run succeeds")
	}
	return true, nil
}

// replaceFolder moves the finished run folder staged over old: old is renamed aside, staged takes
// its name, and the old copy is removed; on failure the old folder is put back.
func replaceFolder(staged, old string) error {
	aside := staged + ".old"
	if err := os.Rename(old, aside); errors.Is(err, fs.ErrNotExist) { // gone meanwhile (resumed staging folder)
		if err := os.Rename(staged, old); err != nil {
			return fmt.Errorf("pipeline: move run folder to %q: %w", old, err)
		}
		atomicfile.SyncDir(filepath.Dir(old))
		return nil
	} else if err != nil {
		return fmt.Errorf("pipeline: replace run folder %q: %w", old, err)
	}
	if err := os.Rename(staged, old); err != nil {
		if rerr := os.Rename(aside, old); rerr != nil {
			return fmt.Errorf("pipeline: replace run folder %q: %w (the previous run is in %q)", old, err, aside)
		}
		return fmt.Errorf("pipeline: replace run folder %q: %w", old, err)
	}
	if err := os.RemoveAll(aside); err != nil {
		return fmt.Errorf("pipeline: remove the previous run folder %q: %w", aside, err)
	}
	atomicfile.SyncDir(filepath.Dir(old))
	return nil
}

type runner struct {
	cfg config.Config
	env RunEnv
	sum *Summary
	dir string // the folder the run writes to: cfg.Out, or its staging sibling with Force
	// resume is set when the run continues an interrupted one in dir (see Resume).
	resume bool
	bb     *backbone.Backbone
	ds     *data.Dataset
	pre    data.Preprocess
	split  classSplit
	// skipped are the images left out with on_bad_image skip, in item order.
	skipped []skippedImage
	// tail is the fine-tuned part of the backbone when the run trains it (prepareTail).
	tail *tailSetup
	// content is the dataset's content key once computed (contentKey).
	content string
}

// prepare loads and checks everything a run needs before anything is written: the dataset, the
// preprocessing, the class split and the backbone (with onnxruntime), and for tail fine-tuning
// the cut and the trained part of the backbone.
func (r *runner) prepare() error {
	cfg, log := r.cfg, r.env.Log
	ds, err := data.Load(cfg.Data)
	if err != nil {
		return dataHint(err)
	}
	r.ds = ds
	pre, err := cfg.Preprocess.ToData()
	if err != nil {
		return fmt.Errorf("%w: %v", config.ErrInvalid, err)
	}
	r.pre = pre
	// The defaults fit to the data, and the split, before any image is read (adapt.go): first
	// what needs only the image list, then what needs the feature size.
	var adapt adaptation
	if r.split, err = adapt.adaptSplit(&r.cfg, ds); err != nil {
		return err
	}
	bb, err := backbone.Open(cfg.Backbone.Path, backbone.Options{Feature: cfg.Backbone.Feature,
		LibraryPath: cfg.OnnxRuntime, Threads: cfg.Threads, Dequantize: string(cfg.Backbone.Dequantize)})
	if err != nil {
		return backboneHint(err)
	}
	r.bb = bb
	if err := adapt.adaptToModel(&r.cfg, ds, r.split, bb.Dim()); err != nil {
		bb.Close()
		return err
	}
	cfg = r.cfg
	for _, a := range adapt.notes {
		log.Info("adapted to the data: "+a.Key+" "+a.From+" -> "+a.To, "why", a.Why)
	}
	for _, w := range adapt.warnings {
		log.Warn(w)
	}
	r.cfg.Adapted = append(r.cfg.Adapted, adapt.notes...) // a resumed run's come from its config.yaml
	cfg = r.cfg
	r.sum.Adaptations, r.sum.Warnings = r.cfg.Adapted, append(r.sum.Warnings, adapt.warnings...)
	split := r.split
	r.sum.Data = DataSummary{Source: ds.Source, Images: len(ds.Items), Classes: len(ds.Classes),
		TrainClasses: len(split.fit) + len(split.val), ValidationClasses: len(split.val), EvalClasses: len(split.eval),
		TrainImages: len(split.fitIdx) + len(split.valIdx), EvalImages: len(split.evalIdx), JPEGDecoder: data.JPEGDecoder()}
	log.Info("dataset", "source", ds.Source, "images", len(ds.Items), "classes", len(ds.Classes),
		"train_classes", r.sum.Data.TrainClasses, "validation_classes", len(split.val), "eval_classes", len(split.eval))
	if w := splitWarning(len(ds.Items), func(i int) string { return ds.Items[i].Split }, ds.Source); w != "" {
		log.Warn(w)
		r.sum.Warnings = append(r.sum.Warnings, w)
	}
	if err := r.checkMemory(memoryBudget()); err != nil {
		bb.Close()
		return err
	}
	if cfg.Backbone.TrainsTail() { // before any extraction: a cut the model cannot train fails now
		if r.tail, err = r.prepareTail(); err != nil {
			bb.Close()
			return err
		}
	}
	return nil
}

// run is the run's stages once everything is checked (prepare): features, baselines, the model
// of whichever kind (model.go) trained, evaluated, exported and reported once.
func (r *runner) run(ctx context.Context) error {
	r.recordMachine()
	in, err := r.extract(ctx, r.tail)
	if err != nil {
		return err
	}
	if err := r.dropSkipped(); err != nil {
		return err
	}
	frozen := frozenFeatures{feats: in.feats, flips: in.flips, d: r.bb.Dim(), bb: r.bb, pre: r.pre}
	eval := evalSet{items: r.split.evalIdx, labels: r.ds.Labels(r.split.evalIdx),
		opts: metrics.Options{KMeansRestarts: r.cfg.Eval.KMeansRestarts, Seed: r.cfg.Seed}}
	if err := r.evaluateBaselines(frozen, eval); err != nil {
		return err
	}
	newProblem := func(r *runner) (problem, error) { return r.headProblem(frozen) }
	if r.tail != nil {
		newProblem = func(r *runner) (problem, error) { return r.tailProblem(r.tail, in.acts, in.views) }
	}
	m, err := r.trainModel(ctx, newProblem)
	if err != nil {
		return err
	}
	if c, ok := m.(io.Closer); ok {
		defer c.Close()
	}
	emb, err := r.evaluate(m, eval)
	if err != nil {
		return err
	}
	raw := rawModel{src: frozen, flipTTA: r.cfg.Backbone.FlipTTA && in.flips != nil}
	if useRaw, err := r.chooseExport(raw, m); err != nil {
		return err
	} else if useRaw { // the report shows what model.onnx embeds
		m = raw
		if emb, err = m.embedItems(eval.items); err != nil {
			return err
		}
	}
	if err := r.export(ctx, m); err != nil {
		return err
	}
	r.writeReport(emb, m.dim(), eval.items) // a report that fails is a warning
	return nil
}

// recordMachine records the CPU, onnxruntime and Go in the summary, and says how an int8
// backbone runs on this CPU.
func (r *runner) recordMachine() {
	cpu, bb, log := backbone.CPU(), r.bb, r.env.Log
	r.sum.Machine = ThisMachine()
	if bb.Dequantized() {
		r.sum.Data.Dequantized = true
		log.Info("int8 backbone runs as its float conversion (backbone.dequantize "+string(r.cfg.Backbone.Dequantize)+")",
			"cpu", cpu.Model, "vnni", cpu.VNNI())
	} else if w := backbone.Int8Warning(bb.Info(), cpu); w != "" {
		log.Warn(w)
		r.sum.Warnings = append(r.sum.Warnings, w)
	}
	r.sum.Data.FeatureDim = bb.Dim()
	r.sum.Data.FeatureTensor = bb.CutInfo().Feature
}

// evalSet is the evaluated items, their labels and the evaluation's settings.
type evalSet struct {
	items  []int
	labels []int
	opts   metrics.Options
}

// evaluateBaselines scores the raw backbone features of the evaluated items, and their flip
// average with backbone.flip_tta (r.sum.Baseline, r.sum.BaselineTTA).
func (r *runner) evaluateBaselines(f frozenFeatures, eval evalSet) error {
	n, mopt := len(eval.items), eval.opts
	x, err := f.items(eval.items, false)
	if err != nil {
		return err
	}
	mopt.Progress = EvalProgress(r.env.Progress, "baseline")
	if r.sum.Baseline, err = r.env.baselines.evaluate(x, n, f.d, eval.labels, mopt); err != nil {
		return err
	}
	r.env.Log.Info("baseline (raw features)", "recall_at_1", r.sum.Baseline.RecallAt1, "nmi", r.sum.Baseline.NMI)
	if !r.cfg.Backbone.FlipTTA {
		return nil
	}
	if x, err = f.items(eval.items, true); err != nil {
		return err
	}
	mopt.Progress = EvalProgress(r.env.Progress, "baseline (flip averaged)")
	res, err := r.env.baselines.evaluate(x, n, f.d, eval.labels, mopt)
	if err != nil {
		return err
	}
	r.sum.BaselineTTA = &res
	r.env.Log.Info("baseline (raw features, flip averaged)", "recall_at_1", res.RecallAt1, "nmi", res.NMI)
	return nil
}

// evaluate scores the trained model m on the evaluated items (r.sum.Trained) and returns its
// embeddings of them.
func (r *runner) evaluate(m model, eval evalSet) ([]float32, error) {
	emb, err := m.embedItems(eval.items)
	if err != nil {
		return nil, err
	}
	mopt := eval.opts
	mopt.Progress = EvalProgress(r.env.Progress, "trained")
	if r.sum.Trained, err = metrics.Evaluate(emb, len(eval.items), m.dim(), eval.labels, mopt); err != nil {
		return nil, err
	}
	what := "trained"
	if r.tail != nil {
		what = "trained (tail + head)"
	}
	r.env.Log.Info(what, "recall_at_1", r.sum.Trained.RecallAt1, "nmi", r.sum.Trained.NMI)
	return emb, nil
}

// dataHint attaches what to do to a data.Load error.
func dataHint(err error) error {
	var me *data.ManifestError
	var le *data.ListError
	switch {
	case errors.As(err, &le) && le.Line > 0:
		return withHint(err, fmt.Sprintf("fix line %d of %s (%s list format)", le.Line, le.Path, le.Format))
	case errors.As(err, &me) && me.Line > 0:
		return withHint(err, fmt.Sprintf("fix line %d of %s: each line is path,label[,split], labels all integers >= 0 or all class names", me.Line, me.Path))
	case errors.As(err, &me):
		return withHint(err, fmt.Sprintf("fix %s: a header line path,label[,split] then one line per image", me.Path))
	case errors.Is(err, fs.ErrNotExist):
		return withHint(err, "check --data (or data in the config): an image folder root/<class>/<image>, a .csv manifest path,label[,split], or a folder holding manifest.csv")
	}
	return withHint(err, "--data must be an image folder root/<class>/<image>, a .csv manifest path,label[,split], or a folder holding manifest.csv")
}

// backboneHint attaches what to do to a backbone.Open error.
func backboneHint(err error) error {
	var fe *backbone.FeatureError
	var le *ort.LibraryError
	switch {
	case errors.As(err, &le): // its message says how to fix it
		return err
	case errors.As(err, &fe):
		return withHint(err, "pass one of the candidates with --feature (or backbone.feature), or leave it empty for the automatic choice")
	case errors.Is(err, fs.ErrNotExist):
		return withHint(err, "check --backbone (or backbone.path in the config): it must name an ONNX model file")
	case errors.Is(err, onnxpb.ErrInvalid):
		return withHint(err, "the file is not a complete ONNX model: download or export it again, then check its size and checksum")
	}
	return err
}

// classSplit is the partition of a dataset's classes: fit (trained on), val (held out of the
// training classes for model selection) and eval (never seen in training).
type classSplit struct {
	fit, val, eval          []int
	dropped                 []int // training classes with a single image, left out
	fitIdx, valIdx, evalIdx []int
}

// splitClasses trains on the first trainClasses labels (0: half of them) and evaluates on the
// rest; valClasses of the training classes, chosen with seed, are held out for model selection.
func splitClasses(ds *data.Dataset, trainClasses, valClasses int, seed int64) (classSplit, error) {
	var s classSplit
	counts := ds.ClassCounts()
	present := presentClasses(counts)
	if trainClasses == 0 {
		trainClasses = len(present) / 2
		if trainClasses < 2 {
			hint := "pass --train-classes 2 to train on 2 classes and evaluate on the others"
			if len(present) < 3 {
				hint = "add classes: the Group Loss trains on at least 2 and at least 1 more is needed to evaluate on"
			}
			return s, withHint(fmt.Errorf("pipeline: %q has %d classes: half of them, %d, are too few training classes for the Group Loss (it needs at least 2)",
				ds.Source, len(present), trainClasses), hint)
		}
	}
	if trainClasses >= len(present) {
		return s, withHint(fmt.Errorf("%w: train_classes %d leaves no class of the %d in %q to evaluate on", config.ErrInvalid, trainClasses, len(present), ds.Source),
			fmt.Sprintf("pass --train-classes between 2 and %d", len(present)-1))
	}
	// Training classes with a single image cannot form a positive pair: they are left out.
	var trainL []int
	for _, l := range present[:trainClasses] {
		if counts[l] < 2 {
			s.dropped = append(s.dropped, l)
		} else {
			trainL = append(trainL, l)
		}
	}
	s.eval = present[trainClasses:]
	if err := checkEvalPositives(counts, s.eval, ds.Source); err != nil {
		return s, err
	}
	if len(trainL) < 2 {
		return s, withHint(fmt.Errorf("pipeline: %d of the %d training classes of %q have 2 images or more; metric learning needs at least 2 such classes",
			len(trainL), trainClasses, ds.Source), "add images to the training classes, or pass --train-classes to train on more classes")
	}
	if valClasses > 0 && len(trainL)-valClasses < 2 {
		return s, withHint(fmt.Errorf("%w: %d validation classes leave fewer than 2 of the %d training classes to train on", config.ErrInvalid, valClasses, len(trainL)),
			fmt.Sprintf("pass --validation-classes %d or less (0 disables model selection), or leave it out to adapt it", len(trainL)-2))
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
		if dst := role[it.Label]; dst != nil {
			*dst = append(*dst, i)
		}
	}
	return s, nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("pipeline: %s: %w", filepath.Base(path), err)
	}
	return atomicfile.WriteBytes(path, "JSON", append(b, '\n'))
}

func writeYAML(path string, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("pipeline: %s: %w", filepath.Base(path), err)
	}
	return atomicfile.WriteBytes(path, "YAML", b)
}
