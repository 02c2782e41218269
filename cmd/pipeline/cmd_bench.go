package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/config"
)

// benchOptions are the flags of `pipeline bench`. Sizes left at 0 come from the run config
// (--config, else the defaults of `pipeline run`).
type benchOptions struct {
	config      string
	out         string
	data        string
	backbone    string
	onnxruntime string
	images      int
	batch       int
	threads     int
	workers     int
	rounds      int
	headSteps   int
	refPython   string
	refScript   string
	refEpochs   int
	tailBlocks  int
	tailSteps   int
	tailScript  string
	// tailBlocksSet is set when --tail-blocks was given: it then overrides the config's
	// backbone.train_blocks and trainable_from.
	tailBlocksSet bool
}

func (o *benchOptions) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.config, "config", "", "YAML run config `FILE` for the data, backbone, batch, threads and workers (default: the defaults of run)")
	fs.StringVar(&o.out, "out", "", "write the JSON report to `FILE` (atomically) instead of stdout")
	fs.StringVar(&o.data, "data", "", "dataset (default: the config's, ../shared/data/cub100)")
	fs.StringVar(&o.backbone, "backbone", "", "ONNX backbone `FILE` (default: the config's, the shared int8 MobileNetV2)")
	onnxruntimeFlag(fs, &o.onnxruntime)
	fs.IntVar(&o.images, "images", 512, "images extracted per round (the first `N` of the dataset)")
	fs.IntVar(&o.batch, "batch", 0, "extraction batch size (default: the config's backbone.batch_size, 32)")
	fs.IntVar(&o.threads, "threads", 0, "onnxruntime intra-op threads (default: the config's threads, 2)")
	fs.IntVar(&o.workers, "workers", 0, "image decoding goroutines (default: the config's preprocess.workers, 2)")
	fs.IntVar(&o.rounds, "rounds", 5, "extraction rounds, alternating bare and pipeline; the ratio is the median of the rounds' ratios")
	fs.IntVar(&o.headSteps, "head-steps", 100, "timed head training steps")
	fs.StringVar(&o.refPython, "reference-python", "", "Python `INTERPRETER` with torch and sklearn (e.g. /usr/bin/python3): also time the PyTorch reference head,\n"+
		"and with onnx the same tail step in PyTorch")
	fs.StringVar(&o.refScript, "reference-script", "", "the reference timing script (default scripts/bench_ref_head.py of the repository)")
	fs.IntVar(&o.refEpochs, "reference-epochs", 3, "timed epochs of the reference (50 steps each)")
	fs.IntVar(&o.tailBlocks, "tail-blocks", 1, "tail fine-tuning step: train the last `K` blocks of the backbone (with --config and without this flag, the\n"+
		"config's train_blocks or trainable_from; 0 skips the tail benchmark)")
	fs.IntVar(&o.tailSteps, "tail-steps", 10, "timed tail training steps (after 2 untimed ones), ours and the reference's")
	fs.StringVar(&o.tailScript, "reference-tail-script", "", "the reference tail timing script (default scripts/bench_ref_tail.py of the repository)")
}

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o benchOptions
	fs := newFlagSet("pipeline bench", stderr, "usage: pipeline bench [--out FILE.json] [--images N] [--reference-python PYTHON] [flags]\n\n"+
		"Measures feature extraction (pipeline vs bare onnxruntime, same images, same process), head\n"+
		"training steps/s and a tail fine-tuning step (--tail-blocks), optionally against PyTorch (the\n"+
		"reference head; the same tail, batch and loss), and writes a JSON report.\n\n")
	o.addFlags(fs)
	if help, err := parseFlags(fs, args, ""); help || err != nil {
		return err
	}
	fs.Visit(func(f *flag.Flag) { o.tailBlocksSet = o.tailBlocksSet || f.Name == "tail-blocks" })
	rep, err := runBench(ctx, o, stderr)
	if err != nil {
		return err
	}
	return writeJSONReport("bench", o.out, rep, stdout, stderr)
}

// runBench runs the extraction and head benchmarks (and the reference, with o.refPython) and
// logs one line per measurement to logw.
func runBench(ctx context.Context, o benchOptions, logw io.Writer) (*benchReport, error) {
	cfg := config.DefaultConfig()
	// Without --config the tail step is timed with the Group Loss, the loss the PyTorch reference
	// implements (the default config trains Multi-Similarity); a config file's loss is kept.
	cfg.Loss.Name = config.LossGroup
	if o.config != "" {
		var err error
		if cfg, err = config.LoadConfig(o.config); err != nil {
			return nil, err
		}
	}
	setStr := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	setInt := func(dst *int, v int) {
		if v > 0 {
			*dst = v
		}
	}
	setStr(&cfg.Data, o.data)
	setStr(&cfg.Backbone.Path, o.backbone)
	setStr(&cfg.OnnxRuntime, o.onnxruntime)
	setInt(&cfg.Backbone.BatchSize, o.batch)
	setInt(&cfg.Threads, o.threads)
	setInt(&cfg.Preprocess.Workers, o.workers)
	if o.images < 1 || o.rounds < 1 || o.headSteps < 1 || o.refEpochs < 1 || o.tailSteps < 1 || o.tailBlocks < 0 {
		return nil, fmt.Errorf("%w: --images, --rounds, --head-steps, --reference-epochs and --tail-steps must be positive, --tail-blocks >= 0", errUsage)
	}
	benchTailDepth(&cfg.Backbone, o)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", config.ErrInvalid, err)
	}
	rep := &benchReport{LoadAverage: loadAverage()}
	var err error
	if rep.Extract, err = benchExtract(ctx, cfg, o.images, o.rounds, logw); err != nil {
		return nil, err
	}
	rep.Machine = pipeline.ThisMachine()
	if rep.Head, err = benchHead(ctx, o.headSteps); err != nil {
		return nil, err
	}
	fmt.Fprintf(logw, "bench: head %.1f steps/s (%.1f ms/step)\n", rep.Head.StepsPerS, rep.Head.MsPerStep)
	if o.refPython != "" {
		if rep.Reference, err = benchReference(ctx, o, rep.Head.StepsPerS); err != nil {
			return nil, err
		}
		fmt.Fprintf(logw, "bench: reference head %.1f steps/s (%.1f ms/step); ours is %.2fx faster (goal >= 2)\n",
			rep.Reference.StepsPerS, rep.Reference.MsPerStep, rep.Reference.Speedup)
	}
	if cfg.Backbone.TrainBlocks > 0 || cfg.Backbone.TrainableFrom != "" {
		if rep.Tail, err = benchTail(ctx, o, cfg, logw); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// benchTailDepth sets the tail the bench times. Without --config it is the flag's (one block by
// default: the step the README's speed table compares with PyTorch), not the run's default depth;
// with --config, the config's unless --tail-blocks is given.
func benchTailDepth(b *config.BackboneConfig, o benchOptions) {
	configTail := o.config != "" && (b.TrainBlocks > 0 || b.TrainableFrom != "")
	if o.tailBlocksSet || !configTail {
		b.TrainBlocks, b.TrainableFrom = o.tailBlocks, ""
	}
}
