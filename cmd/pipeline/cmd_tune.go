package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/tune"
)

// cmdTune is `pipeline tune`: a hyperparameter search over the config keys of a space file,
// scored on the validation classes only.
func cmdTune(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o pipeline.TuneOptions
	var jsonOut, verbose bool
	fs := newFlagSet("pipeline tune", stderr, "usage: pipeline tune --config FILE --space SPACE.yaml --trials N --out DIR [flags]\n\n")
	fs.StringVar(&o.Config, "config", "", "base config `FILE` (e.g. configs/cub100.yaml, tail fine-tuning, or configs/cub100-head.yaml, the head only)")
	fs.StringVar(&o.Space, "space", "", "search space `FILE`: config keys and distributions (e.g. configs/spaces/grouploss.yaml)")
	fs.IntVar(&o.Trials, "trials", 20, "number of trials `N` (a rerun with more continues the study)")
	fs.StringVar(&o.Out, "out", "", "study folder `DIR`: tune.json, tune.md, best.yaml; rerun with the same DIR to continue")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the quasi-random points")
	fs.BoolVar(&o.BaseTrial, "base-trial", true, "trial 1 is the base config itself (the space's single-valued keys set), so the best is never below it; the other trials are quasi-random")
	fs.IntVar(&o.Halving.Eta, "eta", 3, "successive halving: a trial goes on at a rung if in the best 1/`ETA` there (< 2: no early stopping)")
	fs.IntVar(&o.Halving.MinEpochs, "min-epochs", 2, "successive halving: the first rung's epoch; the next ones are ×eta")
	fs.BoolVar(&jsonOut, "json", false, "print tune.json on stdout at the end")
	fs.BoolVar(&verbose, "v", false, "log each trial's epochs (default: warnings only)")
	usage := fs.Usage
	fs.Usage = func() {
		usage()
		fmt.Fprintf(stderr, "\nEach trial trains the config's model (head, or tail + head) with the space's keys set, on the training classes; it is scored on\n"+
			"the validation classes (the evaluation classes are never read). One progress line per trial.\n"+
			"Exit codes: 0 ok, 1 failure, 2 bad usage, config or space, 130 interrupted (rerun to continue).\n")
	}
	if help, err := parseFlags(fs, args, ""); help || err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{{"--config", o.Config}, {"--space", o.Space}, {"--out", o.Out}} {
		if f.v == "" {
			return fmt.Errorf("%w: %s is required (pipeline tune -h)", errUsage, f.name)
		}
	}
	logger, lines := batchOutput(stdout, stderr, verbose, jsonOut)
	st, err := pipeline.Tune(ctx, o, pipeline.RunEnv{Log: logger, Progress: stderr}, lines)
	if st == nil {
		return err
	}
	if jsonOut {
		if e := writeJSON(stdout, st); e != nil && err == nil {
			err = e
		}
	} else if st.Best >= 0 {
		b := st.Trials[st.Best]
		fmt.Fprintf(stdout, "best: trial %d, score %.4f at epoch %d\nwritten: %s, %s, %s\n", b.Index+1, b.Score, b.BestEpoch,
			filepath.Join(o.Out, tune.StudyFile), filepath.Join(o.Out, tune.ReportFile), filepath.Join(o.Out, tune.BestFile))
	}
	return err
}
