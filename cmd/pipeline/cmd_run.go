package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/config"
)

// runOptions are the flags of `pipeline run`; only flags given on the command line override the
// config file.
type runOptions struct {
	config       string
	data         string
	backbone     string
	feature      string
	out          string
	cache        string
	onnxruntime  string
	trainClasses int
	valClasses   int
	epochs       int
	lr           float64
	seed         int64
	loss         string
	threads      int
	onBadImage   string
	force        bool
	trainBlocks  int
	trainFrom    string
	tailPrefix   string
	backboneLR   float64
	jsonOut      bool
	verbose      bool
	resume       string
	preset       string
	ensemble     int
	keepTrained  bool
}

func (o *runOptions) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.config, "config", "", "YAML config `FILE` (defaults: the CUB-100 protocol)")
	fs.StringVar(&o.data, "data", "", "image folder (root/<class>/<image>), CSV manifest (path,label[,split]) or folder with manifest.csv")
	fs.StringVar(&o.backbone, "backbone", "", "ONNX backbone `FILE` (default ../shared/models/mobilenetv2-12-int8.onnx)")
	fs.StringVar(&o.feature, "feature", "", "feature tensor to cut the backbone at (default: the penultimate pooled features)")
	fs.StringVar(&o.out, "out", "", "run folder `DIR` (default runs/<date-time>)")
	fs.StringVar(&o.cache, "cache", "", "feature cache `DIR` (default .cache/features)")
	onnxruntimeFlag(fs, &o.onnxruntime)
	fs.IntVar(&o.trainClasses, "train-classes", 0, "train on the first `N` classes (sorted), evaluate on the rest (default half)")
	fs.IntVar(&o.valClasses, "validation-classes", 0, "training classes held out for model selection and the comparison with the raw features (default: 20% of them, at least 2, adapted to the data)")
	fs.IntVar(&o.epochs, "epochs", 0, "training epochs")
	fs.Float64Var(&o.lr, "lr", 0, "learning rate")
	fs.Int64Var(&o.seed, "seed", 0, "random seed")
	fs.StringVar(&o.loss, "loss", "", "loss: group (the Group Loss), or a baseline: softmax, triplet, contrastive, proxy_anchor, multi_similarity")
	fs.IntVar(&o.threads, "threads", 0, "onnxruntime intra-op threads")
	fs.StringVar(&o.onBadImage, "on-bad-image", "", "what an image that does not decode does: `fail` (stop before training) or skip (leave it out, list it in skipped_images.txt) (default fail)")
	fs.IntVar(&o.trainBlocks, "train-blocks", 0, "fine-tune the last `K` inverted-residual blocks of the backbone with the head (0: head only)")
	fs.StringVar(&o.trainFrom, "trainable-from", "", "fine-tune the backbone from this `TENSOR` (or node) on, instead of --train-blocks")
	fs.StringVar(&o.tailPrefix, "tail-prefix", "", "which model computes the activations the fine-tuned blocks train on: `float` (the int8 backbone's float conversion),\nint8 (its own int8 layers, dequantized at the cut; needs a CPU where the backbone runs int8), or auto (int8 where the backbone runs int8)")
	fs.Float64Var(&o.backboneLR, "backbone-lr", 0, "learning rate of the fine-tuned backbone part (default 1e-4)")
	fs.BoolVar(&o.force, "force", false, "reuse a non-empty --out folder: the new run replaces it only if it succeeds")
	fs.BoolVar(&o.jsonOut, "json", false, "print the run summary as JSON on stdout")
	fs.BoolVar(&o.verbose, "v", false, "debug logging")
	fs.StringVar(&o.preset, "preset", "", "start from the Group Loss reference code's hyperparameters for a benchmark: cub, cars196 or sop (the config file and the other flags override it)")
	fs.IntVar(&o.ensemble, "ensemble", 0, "train `N` heads (seeds seed..seed+N-1) and export the concatenation of their embeddings (default 1)")
	fs.BoolVar(&o.keepTrained, "keep-trained", false, "export the trained model even when the validation classes do not show that it beats the raw backbone features\n(fewer than 5 of them, or no MAP@R lead; by default the raw features are exported then)")
	fs.StringVar(&o.resume, "resume", "", "continue the interrupted run in `RUN_DIR` with its config.yaml (only -v and --json may be added)")
}

// apply overrides cfg with the flags that were set.
func (o *runOptions) apply(fs *flag.FlagSet, cfg *config.Config) {
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "data":
			cfg.Data = o.data
		case "backbone":
			cfg.Backbone.Path = o.backbone
		case "feature":
			cfg.Backbone.Feature = o.feature
		case "out":
			cfg.Out = o.out
		case "cache":
			cfg.Cache = o.cache
		case "onnxruntime":
			cfg.OnnxRuntime = o.onnxruntime
		case "train-classes":
			cfg.TrainClasses = o.trainClasses
		case "validation-classes":
			cfg.ValidationClasses = o.valClasses
		case "epochs":
			cfg.Optimizer.Epochs = o.epochs
		case "lr":
			cfg.Optimizer.LR = o.lr
		case "loss":
			cfg.Loss.Name = config.LossName(o.loss)
		case "seed":
			cfg.Seed = o.seed
		case "threads":
			cfg.Threads = o.threads
		case "on-bad-image":
			cfg.OnBadImage = config.BadImagePolicy(o.onBadImage)
		case "force":
			cfg.Force = o.force
		case "train-blocks":
			cfg.Backbone.TrainBlocks = o.trainBlocks
		case "trainable-from":
			cfg.Backbone.TrainableFrom = o.trainFrom
		case "tail-prefix":
			cfg.Backbone.TailPrefix = config.TailPrefix(o.tailPrefix)
		case "backbone-lr":
			cfg.Backbone.LR = o.backboneLR
		case "ensemble":
			cfg.Ensemble = o.ensemble
		case "keep-trained":
			cfg.KeepTrained = o.keepTrained
		}
	})
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o runOptions
	fs := flag.NewFlagSet("pipeline run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.addFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: pipeline run [--config FILE] [--data DIR|CSV] [--backbone FILE] [--out DIR] [flags]\n\n")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nA non-empty --out folder is refused unless --force; with --force the new run replaces it only if it succeeds.\n")
		fmt.Fprintf(stderr, "--resume RUN_DIR continues an interrupted run in place after its last completed epoch; same seed, same results.\n")
		fmt.Fprintf(stderr, "Exit codes: 0 ok, 1 failure, 2 bad usage or config, 3 NaN/Inf during training, 130 interrupted.\n")
	}
	if help, err := parseFlags(fs, args, ""); help || err != nil {
		return err
	}
	if err := checkResumeFlags(fs, o.resume); err != nil {
		return err
	}
	cfg := config.DefaultConfig()
	if o.resume == "" {
		var err error
		if cfg, err = config.LoadConfigPreset(o.config, o.preset); err != nil {
			return err
		}
	}
	o.apply(fs, &cfg)
	env := pipeline.RunEnv{Log: textLogger(stderr, o.verbose, slog.LevelInfo, slog.LevelDebug), Progress: stderr}
	var sum *pipeline.Summary
	var err error
	if o.resume != "" {
		sum, err = pipeline.Resume(ctx, o.resume, env)
	} else {
		sum, err = pipeline.Run(ctx, cfg, env)
	}
	// The results are printed for a successful run only; a failed one has its partial summary in
	// the run folder's metrics.json.
	if sum != nil && err == nil {
		if o.jsonOut {
			if e := writeJSON(stdout, sum); e != nil && err == nil {
				err = e
			}
		} else {
			sum.PrintTable(stdout)
		}
	}
	return err
}
