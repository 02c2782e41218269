package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"slices"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/train"
	"github.com/grouploss/pipeline/pipeline/tune"
)

// TuneOptions are the settings of `pipeline tune`.
type TuneOptions struct {
	Config string // the base config file: every trial is it with the space's keys set
	Space  string // the search space file (see package tune)
	Trials int
	Out    string // the study folder: tune.json, tune.md, best.yaml
	Seed   uint64 // scrambles the quasi-random points
	// BaseTrial makes trial 1 the base config itself (tune.Settings.BaseTrial).
	BaseTrial bool
	// Halving stops poor trials at its rungs; Eta < 2 disables it.
	Halving tune.Halving
}

// epochHook is called by fit after each epoch with the history so far (epoch 0, before training,
// first); an error stops training (RunEnv.afterEpoch).
type epochHook func(history []train.EpochStats) error

// Tune is `pipeline tune`: trials of the base config with the space's keys set to quasi-random
// values, each training a head on the training classes and scored by the model-selection score on
// the validation classes; successive halving stops poor trials at its rungs. Results go to
// o.Out (see tune.Run); a second call with the same folder continues the study.
//
// The evaluation classes are never read: they are dropped from the dataset before the backbone
// opens, so no code path of a trial can load their images or features. The features of the
// training classes are extracted once (or taken from the cache) and shared by every trial, and so
// are the activations at the cut when the base config fine-tunes the backbone's tail. Trials train
// a single model (ensemble is ignored); the keys that decide the features, the activations or the
// split (data, class counts, seed, preprocess, the backbone's keys besides backbone.lr) are not
// tunable, and backbone.lr only with tail fine-tuning.
func Tune(ctx context.Context, o TuneOptions, env RunEnv, progress io.Writer) (*tune.Study, error) {
	if env.Log == nil {
		env.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if env.Progress == nil {
		env.Progress = io.Discard
	}
	if o.Trials < 1 {
		return nil, fmt.Errorf("%w: tune: %d trials: want at least 1", config.ErrInvalid, o.Trials)
	}
	cfgRaw, err := os.ReadFile(o.Config)
	if err != nil {
		return nil, withHint(fmt.Errorf("%w: tune: %w", config.ErrInvalid, err), "pass the base config with --config")
	}
	base, err := config.ParseConfig(cfgRaw, o.Config)
	if err != nil {
		return nil, err
	}
	if err := base.Validate(); err != nil {
		return nil, err
	}
	if base.ValidationClasses < 1 {
		return nil, withHint(fmt.Errorf("%w: tune: %s holds no validation classes to score trials on", config.ErrInvalid, o.Config),
			"set validation_classes (10 for CUB-100): tune never scores on the evaluation classes")
	}
	spaceRaw, err := os.ReadFile(o.Space)
	if err != nil {
		return nil, withHint(fmt.Errorf("%w: tune: %w", config.ErrInvalid, err), "pass the search space with --space (e.g. configs/spaces/grouploss.yaml)")
	}
	sp, err := tune.ParseSpace(spaceRaw, o.Space)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	tc := trialConfigs{raw: cfgRaw, name: o.Config, base: base}
	if err := tc.check(sp); err != nil {
		return nil, err
	}

	ds, err := data.Load(base.Data)
	if err != nil {
		return nil, dataHint(err)
	}
	split, err := splitClasses(ds, base.TrainClasses, base.ValidationClasses, base.Seed)
	if err != nil {
		return nil, err
	}
	ds, split = trainingOnly(ds, split)
	pre, err := base.Preprocess.ToData()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", config.ErrInvalid, err)
	}
	bb, err := backbone.Open(base.Backbone.Path, backbone.Options{Feature: base.Backbone.Feature,
		LibraryPath: base.OnnxRuntime, Threads: base.Threads, Dequantize: string(base.Backbone.Dequantize)})
	if err != nil {
		return nil, backboneHint(err)
	}
	defer bb.Close()
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("pipeline: tune: %w", err)
	}
	shared := runner{cfg: base, env: env, sum: &Summary{}, ds: ds, pre: pre, split: split, bb: bb, dir: o.Out}
	// With tail fine-tuning the activations at the cut are extracted once too; each trial decodes
	// its own copy of the trained part (prepareTail), so no trial starts from another's weights.
	if base.Backbone.TrainsTail() {
		if shared.tail, err = shared.prepareTail(); err != nil {
			return nil, err
		}
	}
	in, err := shared.extract(ctx, shared.tail)
	if err != nil {
		return nil, err
	}
	if err := shared.dropSkipped(); err != nil {
		return nil, err
	}
	split = shared.split
	feats, flips, acts, views := in.feats, in.flips, in.acts, in.views
	env.Log.Info("tune: features of the training classes", "images", len(split.fitIdx)+len(split.valIdx),
		"train_classes", len(split.fit), "validation_classes", len(split.val), "cache_hit", shared.sum.Timing.FeatureCacheHit)

	objective := func(ctx context.Context, t *tune.Trial, report func([]float64) error) error {
		cfg, err := tc.config(t.Params)
		if err != nil {
			return fmt.Errorf("%w: %v", tune.ErrInvalid, err)
		}
		dir, err := os.MkdirTemp(o.Out, fmt.Sprintf("trial-%d-", t.Index+1))
		if err != nil {
			return fmt.Errorf("pipeline: tune: %w", err)
		}
		defer os.RemoveAll(dir) // the trial's checkpoints: best.yaml is what a study keeps
		var stop error
		tenv := env
		tenv.Progress = io.Discard
		tenv.afterEpoch = func(h []train.EpochStats) error {
			scores := make([]float64, len(h))
			for i, st := range h {
				scores[i] = st.Score
			}
			stop = report(scores)
			return stop
		}
		r := runner{cfg: cfg, env: tenv, sum: &Summary{}, ds: ds, pre: pre, split: split, bb: bb, dir: dir}
		var p problem
		if acts != nil {
			if r.tail, err = r.prepareTail(); err == nil {
				p, err = r.tailProblem(r.tail, acts, views)
			}
		} else {
			p, err = r.headProblem(frozenFeatures{feats: feats, flips: flips, d: bb.Dim(), bb: bb, pre: pre})
		}
		if err == nil {
			if c, ok := p.model.(io.Closer); ok {
				defer c.Close()
			}
			err = r.train(ctx, p)
		}
		switch {
		case err == nil:
			return nil
		case stop != nil && errors.Is(err, stop):
			return stop
		case errors.Is(err, train.ErrNonFinite), errors.Is(err, head.ErrNonFinite):
			if inner := errors.Unwrap(err); inner != nil { // fit names the trial's checkpoints, removed with it
				err = inner
			}
			return fmt.Errorf("%w: %v", tune.ErrNonFinite, err)
		case errors.Is(err, config.ErrInvalid):
			return fmt.Errorf("%w: %v", tune.ErrInvalid, err)
		}
		return err
	}
	return tune.Run(ctx, tune.Settings{Space: sp, SpaceRaw: spaceRaw, ConfigPath: o.Config, ConfigRaw: cfgRaw,
		Trials: o.Trials, Seed: o.Seed, BaseTrial: o.BaseTrial, Halving: o.Halving, Metric: "the model-selection score of pipeline run (metrics.json training.selection) on the validation classes",
		BestConfig: tc.best(o)}, o.Out, objective, progress)
}

// trialConfigs makes the config of a trial: the base file with the space's keys set, read as
// LoadConfig reads a file.
type trialConfigs struct {
	raw  []byte
	name string
	base config.Config
	keys []string // the space's keys in file order, set by check
}

func (tc *trialConfigs) config(params map[string]any) (config.Config, error) {
	raw, err := tune.Apply(tc.raw, tc.keys, params, "")
	if err != nil {
		return config.Config{}, err
	}
	cfg, err := config.ParseConfig(raw, tc.name+" with the space's values")
	if err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	b, c := tc.base, cfg
	bb, cb := b.Backbone, c.Backbone
	if bb.LR != cb.LR && !bb.TrainsTail() {
		return cfg, fmt.Errorf("%w: backbone.lr is the fine-tuned blocks' learning rate, and the base config trains the head only (backbone.train_blocks 0)", config.ErrInvalid)
	}
	bb.LR, cb.LR = 0, 0
	// The whole backbone (trained blocks included, backbone.lr aside): the activations are shared.
	if !sameProtocol(b, c) || b.Seed != c.Seed || !reflect.DeepEqual(bb, cb) {
		return cfg, fmt.Errorf("%w: it changes what every trial shares (the data, the class split, the seed, the backbone besides backbone.lr or the preprocessing)", config.ErrInvalid)
	}
	return cfg, nil
}

// check tries each key of sp at its bounds (or each of its choices), the other keys at their
// first value, so that a key the config does not have, or a value it refuses, is an error naming
// the space file's line before anything runs. Keys are tried together, so that a space may set
// loss.name and that loss's args; when the first values fail together, the first key (in file
// order) whose addition fails is named.
func (tc *trialConfigs) check(sp *tune.Space) error {
	bad := func(p tune.Param, v any, err error) error {
		return withHint(fmt.Errorf("%w: %w", config.ErrInvalid, &tune.SpaceError{File: sp.File, Line: p.Line, Key: p.Key,
			Msg: fmt.Sprintf("value %v: %v", v, err)}), "name keys as in the config file (pipeline run's config.yaml lists them all), with values it accepts")
	}
	tc.keys = make([]string, len(sp.Params))
	ref := map[string]any{}
	for i, p := range sp.Params {
		tc.keys[i] = p.Key
		ref[p.Key] = p.Extremes()[0]
	}
	if _, err := tc.config(ref); err != nil {
		some := map[string]any{}
		for _, p := range sp.Params {
			some[p.Key] = ref[p.Key]
			if _, err := tc.config(some); err != nil {
				return bad(p, ref[p.Key], err)
			}
		}
	}
	for _, p := range sp.Params {
		for _, v := range p.Extremes() {
			params := maps.Clone(ref)
			params[p.Key] = v
			if _, err := tc.config(params); err != nil {
				return bad(p, v, err)
			}
		}
	}
	return nil
}

// best writes best.yaml: the base config with the best trial's values and a header saying so.
func (tc *trialConfigs) best(o TuneOptions) func(map[string]any) ([]byte, error) {
	return func(params map[string]any) ([]byte, error) {
		return tune.Apply(tc.raw, tc.keys, params, fmt.Sprintf("The best trial of `pipeline tune --config %s --space %s` (%s):\n"+
			"%s with the tuned keys set. Run it with `pipeline run --config` and this file.", o.Config, o.Space, o.Out, o.Config))
	}
}

// trainingOnly returns the dataset restricted to the training classes' items (fit and
// validation) and the split re-indexed into it; the evaluation classes keep their labels but no
// items.
func trainingOnly(ds *data.Dataset, s classSplit) (*data.Dataset, classSplit) {
	keep := append(append([]int(nil), s.fitIdx...), s.valIdx...)
	slices.Sort(keep)
	out := &data.Dataset{Root: ds.Root, Classes: ds.Classes, Source: ds.Source, Items: make([]data.Item, len(keep))}
	at := make(map[int]int, len(keep))
	for i, k := range keep {
		out.Items[i] = ds.Items[k]
		at[k] = i
	}
	remap := func(idx []int) []int {
		r := make([]int, len(idx))
		for i, k := range idx {
			r[i] = at[k]
		}
		return r
	}
	return out, classSplit{fit: s.fit, val: s.val, eval: s.eval, fitIdx: remap(s.fitIdx), valIdx: remap(s.valIdx)}
}
