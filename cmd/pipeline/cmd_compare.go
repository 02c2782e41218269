package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/config"
)

// cmdCompare is `pipeline compare`: raw features, the baselines, the Group Loss and a Group Loss
// ensemble on the same protocol, for several seeds, as compare.md and compare.json.
func cmdCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pipeline compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configFile, preset, seeds, out, losses, data, backbone, cache string
		ensemble, ensembleEpochs, epochs                              int
		force, jsonOut, verbose                                       bool
	)
	fs.StringVar(&configFile, "config", "", "YAML config `FILE` of the protocol (defaults: the CUB-100 protocol)")
	fs.StringVar(&preset, "preset", "", "start from the reference code's hyperparameters: cub, cars196 or sop")
	fs.StringVar(&seeds, "seeds", "1,2,3", "comma-separated `SEEDS`; every row runs once per seed")
	fs.StringVar(&out, "out", "", "comparison folder `DIR`: compare.md, compare.json, <row>/seed-<seed>/ (default runs/compare-<date-time>)")
	fs.StringVar(&losses, "losses", "softmax,triplet,contrastive,proxy_anchor,group", "comma-separated single-head rows (loss names)")
	var rowConfigs string
	fs.StringVar(&rowConfigs, "configs", "", "rows given as config files, `NAME=FILE,...` (e.g. each loss's tuned best.yaml): run as they are, on the protocol of --config; without --losses, the loss rows are left out")
	fs.IntVar(&ensemble, "ensemble", 3, "heads of the Group Loss ensemble row (1: no ensemble row)")
	fs.IntVar(&ensembleEpochs, "ensemble-epochs", 0, "epochs of each ensemble head (default: the config's)")
	fs.IntVar(&epochs, "epochs", 0, "training epochs of every row (default: the config's)")
	fs.StringVar(&data, "data", "", "image folder, CSV manifest or folder with manifest.csv (default: the config's)")
	fs.StringVar(&backbone, "backbone", "", "ONNX backbone `FILE` (default: the config's)")
	fs.StringVar(&cache, "cache", "", "feature cache `DIR` (default: the config's, .cache/features)")
	fs.BoolVar(&force, "force", false, "run every row again instead of reusing finished runs of the same config in --out")
	fs.BoolVar(&jsonOut, "json", false, "print compare.json on stdout instead of the table")
	fs.BoolVar(&verbose, "v", false, "log every run's progress (default: warnings only)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: pipeline compare [--config FILE] [--seeds 1,2,3] [--out DIR] [flags]\n\n")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nEach row and seed is a full `pipeline run` in DIR/<row>/seed-<seed>; features come from the cache.\n")
		fmt.Fprintf(stderr, "Finished runs of the same config are reused, so an interrupted comparison continues (--force: run all again).\n")
		fmt.Fprintf(stderr, "Exit codes: 0 ok, 1 a run failed, 2 bad usage or config, 130 interrupted.\n")
	}
	if help, err := parseFlags(fs, args, ""); help || err != nil {
		return err
	}
	seedList, err := parseSeeds(seeds)
	if err != nil {
		return err
	}
	if ensemble < 1 {
		return fmt.Errorf("%w: --ensemble %d: want 1 (no ensemble row) or more", errUsage, ensemble)
	}
	cfg, err := config.LoadConfigPreset(configFile, preset)
	if err != nil {
		return err
	}
	lossesSet := false
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "losses":
			lossesSet = true
		case "epochs":
			cfg.Optimizer.Epochs = epochs
		case "data":
			cfg.Data = data
		case "backbone":
			cfg.Backbone.Path = backbone
		case "cache":
			cfg.Cache = cache
		}
	})
	lossList := []string{}
	for _, l := range strings.Split(losses, ",") {
		if l = strings.TrimSpace(l); l != "" {
			lossList = append(lossList, l)
		}
	}
	var rows []pipeline.RowConfig
	if rowConfigs != "" {
		if !lossesSet {
			lossList = []string{}
		}
		for _, f := range strings.Split(rowConfigs, ",") {
			name, path, ok := strings.Cut(strings.TrimSpace(f), "=")
			if !ok || name == "" || path == "" {
				return fmt.Errorf("%w: --configs %q: %q is not NAME=FILE", errUsage, rowConfigs, f)
			}
			c, err := config.LoadConfig(path)
			if err != nil {
				return err
			}
			rows = append(rows, pipeline.RowConfig{Name: name, Path: path, Cfg: c})
		}
	}
	logger, lines := batchOutput(stdout, stderr, verbose, jsonOut)
	cmp, err := pipeline.Compare(ctx, cfg, pipeline.CompareOptions{Seeds: seedList, Out: out, Losses: lossList, Configs: rows,
		Ensemble: ensemble, EnsembleEpochs: ensembleEpochs, Force: force, Lines: lines},
		pipeline.RunEnv{Log: logger, Progress: stderr})
	if cmp != nil && len(cmp.Rows) > 0 {
		if jsonOut {
			if e := writeJSON(stdout, cmp); e != nil && err == nil {
				err = e
			}
		} else {
			fmt.Fprintf(stdout, "\n%s\nwritten: %s, %s\n", cmp.Markdown(), filepath.Join(cmp.Config.Out, "compare.md"),
				filepath.Join(cmp.Config.Out, "compare.json"))
		}
	}
	return err
}

// parseSeeds reads "1,2,3".
func parseSeeds(s string) ([]int64, error) {
	var out []int64
	seen := map[int64]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: --seeds %q: %q is not an integer (want e.g. 1,2,3)", errUsage, s, f)
		}
		if seen[v] {
			return nil, fmt.Errorf("%w: --seeds %q: seed %d appears twice", errUsage, s, v)
		}
		seen[v] = true
		out = append(out, v)
	}
	return out, nil
}
