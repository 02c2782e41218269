package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/internal/cputime"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/npy"
	"github.com/grouploss/pipeline/pipeline/train"
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
	fs.StringVar(&o.onnxruntime, "onnxruntime", "", "path of libonnxruntime.so (default $ONNXRUNTIME_SHARED_LIBRARY_PATH, then .deps/onnxruntime)")
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
	fs.IntVar(&o.tailBlocks, "tail-blocks", 1, "tail fine-tuning step: train the last `K` blocks of the backbone (the config's train_blocks or trainable_from\n"+
		"when set and this flag is not given; 0 skips the tail benchmark)")
	fs.IntVar(&o.tailSteps, "tail-steps", 10, "timed tail training steps (after 2 untimed ones), ours and the reference's")
	fs.StringVar(&o.tailScript, "reference-tail-script", "", "the reference tail timing script (default scripts/bench_ref_tail.py of the repository)")
}

// benchReport is the JSON written by `pipeline bench`.
type benchReport struct {
	Machine pipeline.Machine `json:"machine"`
	// LoadAverage is /proc/loadavg's 1, 5 and 15 minute load when the benchmark started: other
	// work on the machine lowers images/s and steps/s (empty when unreadable).
	LoadAverage []float64       `json:"load_average,omitempty"`
	Extract     extractBench    `json:"extract"`
	Head        headBench       `json:"head"`
	Reference   *referenceBench `json:"reference,omitempty"`
	Tail        *tailBench      `json:"tail,omitempty"`
}

// tailBench is a training step of tail fine-tuning (pipeline.BenchTail: the last K blocks of
// the float backbone, the head and the loss, as `pipeline run --train-blocks K` trains them) and,
// with --reference-python, the same step in PyTorch (scripts/bench_ref_tail.py) on the same tail,
// batch and settings, measured in the same run.
type tailBench struct {
	*pipeline.TailBench
	// LoadAverage is /proc/loadavg when the tail benchmark started.
	LoadAverage []float64      `json:"load_average,omitempty"`
	Reference   *tailReference `json:"reference,omitempty"`
	// ReferenceSkipped says why there is no reference with --reference-python (e.g. the
	// interpreter lacks the onnx module, or the loss is not the Group Loss).
	ReferenceSkipped string `json:"reference_skipped,omitempty"`
}

// tailReference is what scripts/bench_ref_tail.py measured, plus the comparison.
type tailReference struct {
	Python    string  `json:"python"`
	Script    string  `json:"script"`
	MsPerStep float64 `json:"ms_per_step"`
	StepsPerS float64 `json:"steps_per_s"`
	// CPUMsPerStep is the script's process CPU time per step (all threads; OpenMP's spinning
	// threads count too).
	CPUMsPerStep float64 `json:"cpu_ms_per_step"`
	Threads      int     `json:"threads"`
	// Ratio is our ms/step over PyTorch's; the goal is <= 2.
	Ratio     float64 `json:"ratio"`
	MeetsGoal bool    `json:"within_2x"`
	// ForwardMaxDiff is max |PyTorch - ours| of the tail's output on the batch with the initial
	// parameters, and ForwardMax max |ours|: the two build the same tail.
	ForwardMaxDiff float64        `json:"forward_max_abs_diff"`
	ForwardMax     float64        `json:"forward_max_abs"`
	Raw            map[string]any `json:"raw"` // the script's whole output
}

// extractBench compares feature extraction through the pipeline (decoding by the data package's
// goroutines while onnxruntime runs, as pipeline/extract.go does) with a bare onnxruntime session
// fed already decoded tensors, on the same images in the same process.
type extractBench struct {
	Model    string  `json:"model"`
	Images   int     `json:"images"`
	Batch    int     `json:"batch"`
	Threads  int     `json:"threads"`
	Workers  int     `json:"workers"`
	Rounds   int     `json:"rounds"`
	Pipeline float64 `json:"pipeline_images_per_s"`         // best round
	Bare     float64 `json:"bare_onnxruntime_images_per_s"` // best round
	// Ratio is the median over rounds of the round's pipeline / bare images/s (the two measured
	// back to back, so a machine whose speed drifts between rounds, as virtual machines' do, does
	// not bias it); the goal is >= 0.9. BestRatio is Pipeline / Bare.
	Ratio       float64   `json:"ratio"`
	RoundRatios []float64 `json:"round_ratios"`
	BestRatio   float64   `json:"best_ratio"`
	MeetsGoal   bool      `json:"within_10_percent"`
	// Decode is the throughput of decoding and preprocessing alone (Workers goroutines, no
	// onnxruntime), best round: the pipeline cannot beat 1/(1/Bare + 1/Decode) when both need
	// all the cores.
	Decode float64 `json:"decode_images_per_s"`
	// Process CPU time (user+system, all threads) per image, the lowest of the rounds: unlike
	// images/s it hardly depends on other load on the machine. The pipeline's CPU time is about
	// the sum of the other two; with Threads onnxruntime threads on as many cores, the pipeline
	// stays within 10% of bare only if decoding costs under ~11% of inference.
	BareCPU        float64   `json:"bare_cpu_ms_per_image"`
	DecodeCPU      float64   `json:"decode_cpu_ms_per_image"`
	PipelineCPU    float64   `json:"pipeline_cpu_ms_per_image"`
	PipelineRounds []float64 `json:"pipeline_rounds_images_per_s"`
	BareRounds     []float64 `json:"bare_rounds_images_per_s"`
}

// headBench is the speed of one training step of the head: head.Step (Group Loss forward and
// backward) plus the optimizer update, on random L2-normalized features.
type headBench struct {
	StepsPerS   float64 `json:"steps_per_s"`
	MsPerStep   float64 `json:"ms_per_step"`
	Steps       int     `json:"steps"`
	Batch       int     `json:"batch"`
	In          int     `json:"in"`
	Emb         int     `json:"emb"`
	Classes     int     `json:"classes"`
	Optimizer   string  `json:"optimizer"`
	Temperature float64 `json:"temperature"`
	Iterations  int     `json:"iterations"`
	Anchors     int     `json:"anchors_per_class"`
	Procs       int     `json:"gomaxprocs"`
}

// referenceBench is what scripts/bench_ref_head.py measured, plus the comparison.
type referenceBench struct {
	Python    string         `json:"python"`
	Script    string         `json:"script"`
	StepsPerS float64        `json:"steps_per_s"`
	MsPerStep float64        `json:"ms_per_step"`
	Speedup   float64        `json:"head_speedup"` // our steps/s over the reference's; the goal is >= 1
	MeetsGoal bool           `json:"head_at_least_as_fast"`
	Raw       map[string]any `json:"raw"` // the script's whole output
}

// The head benchmark's sizes: those of ../shared/reference/ref_heads.py (6 classes x 9 samples,
// 1280 -> 512, 50 training classes, Adam lr 1e-3, weight decay 6e-6). The tail benchmark's
// classifier has the 40 classes a default CUB-100 run trains on (50 minus 10 for validation).
const (
	benchTailClasses     = 40
	benchTailWarmup      = 2
	benchClassesPerBatch = 6
	benchSamplesPerClass = 9
	benchIn              = 1280
	benchEmb             = 512
	benchClasses         = 50
	benchLR              = 1e-3
	benchWeightDecay     = 6e-6
)

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
	cfg := pipeline.DefaultConfig()
	if o.config != "" {
		var err error
		if cfg, err = pipeline.LoadConfig(o.config); err != nil {
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
	configTail := cfg.Backbone.TrainBlocks > 0 || cfg.Backbone.TrainableFrom != ""
	if o.tailBlocksSet || !configTail {
		cfg.Backbone.TrainBlocks, cfg.Backbone.TrainableFrom = o.tailBlocks, ""
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", pipeline.ErrConfig, err)
	}
	rep := &benchReport{LoadAverage: loadAverage()}
	var err error
	if rep.Extract, err = benchExtract(ctx, cfg, o.images, o.rounds, logw); err != nil {
		return nil, err
	}
	cpu := backbone.CPU()
	rep.Machine = pipeline.Machine{CPU: cpu.Model, AVX2: cpu.AVX2, AVX512VNNI: cpu.AVX512VNNI, AVXVNNI: cpu.AVXVNNI,
		Cores: runtime.NumCPU(), OnnxRuntime: backbone.RuntimeVersion(), GoVersion: runtime.Version()}
	if rep.Head, err = benchHead(ctx, o.headSteps); err != nil {
		return nil, err
	}
	fmt.Fprintf(logw, "bench: head %.1f steps/s (%.1f ms/step)\n", rep.Head.StepsPerS, rep.Head.MsPerStep)
	if o.refPython != "" {
		if rep.Reference, err = benchReference(ctx, o, rep.Head.StepsPerS); err != nil {
			return nil, err
		}
		fmt.Fprintf(logw, "bench: reference head %.1f steps/s (%.1f ms/step); ours is %.2fx\n",
			rep.Reference.StepsPerS, rep.Reference.MsPerStep, rep.Reference.Speedup)
	}
	if cfg.Backbone.TrainBlocks > 0 || cfg.Backbone.TrainableFrom != "" {
		if rep.Tail, err = benchTail(ctx, o, cfg, logw); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// benchTail times our tail training step and, with o.refPython, PyTorch's.
func benchTail(ctx context.Context, o benchOptions, cfg pipeline.Config, logw io.Writer) (*tailBench, error) {
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
		fmt.Fprintf(logw, "bench: reference tail (PyTorch %v, %d threads) %.1f ms/step, %.1f CPU ms/step; ours takes %.2fx its time (goal <= 2); forward max |diff| %.2g of %.2g (load average %v)\n",
			ref.Raw["torch_version"], ref.Threads, ref.MsPerStep, ref.CPUMsPerStep, ref.Ratio, ref.ForwardMaxDiff, ref.ForwardMax, loadAverage())
	}
	return res, nil
}

// refTailMissingModule is the exit code of scripts/bench_ref_tail.py when the interpreter lacks
// a module it needs (torch, onnx, numpy).
const refTailMissingModule = 3

// benchTailReference runs scripts/bench_ref_tail.py with o.refPython on the float backbone, the
// batch and the settings of t and cfg, written to a temporary folder. skipped is set (and err nil)
// when the interpreter lacks a module.
func benchTailReference(ctx context.Context, o benchOptions, cfg pipeline.Config, t *pipeline.TailBench) (ref *tailReference, skipped string, err error) {
	script := o.tailScript
	if script == "" {
		if script = findRepoFile(filepath.Join("scripts", "bench_ref_tail.py")); script == "" {
			return nil, "", errors.New("bench: scripts/bench_ref_tail.py not found above the working directory or the executable; pass --reference-tail-script")
		}
	}
	dir, err := os.MkdirTemp("", "bench-tail-")
	if err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	in := len(t.Input) / t.Batch
	spec := map[string]any{
		"model": filepath.Join(dir, "float.onnx"), "from": t.From, "to": t.To, "shape": t.ActivationShape,
		"input": filepath.Join(dir, "input.npy"), "output": filepath.Join(dir, "output.npy"),
		"labels": t.Labels, "classes": t.Classes, "emb": t.Emb,
		"normalize": cfg.Head.Normalize, "center": cfg.Head.Center,
		"optimizer": cfg.Optimizer.Name, "lr": cfg.Optimizer.LR, "backbone_lr": cfg.Backbone.LR,
		"weight_decay": cfg.Optimizer.WeightDecay,
		"temperature":  cfg.Loss.Temperature, "iterations": cfg.Loss.Iterations, "scaling": cfg.Loss.Scaling,
		"anchors_per_class": cfg.Loss.AnchorsPerClass,
		"steps":             o.tailSteps, "warmup": benchTailWarmup, "threads": t.Procs,
		"ref": refHeadsPath(),
	}
	if err := onnxpb.SaveAtomic(spec["model"].(string), t.Float); err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	if err := npy.Write(spec["input"].(string), t.Input, t.Batch, in); err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	if err := npy.Write(spec["output"].(string), t.Output, t.Batch, t.Features); err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	specPath := filepath.Join(dir, "spec.json")
	if err := os.WriteFile(specPath, js, 0o644); err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	cmd := exec.CommandContext(ctx, o.refPython, script, "--spec", specPath)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == refTailMissingModule {
			return nil, strings.TrimSpace(tail(stderr.String(), 500)), nil
		}
		return nil, "", fmt.Errorf("bench: reference %q %q: %w\n%s", o.refPython, script, err, tail(stderr.String(), 2000))
	}
	var raw map[string]any
	lines := bytes.Split(bytes.TrimSpace(stdout.Bytes()), []byte("\n"))
	if err := json.Unmarshal(lines[len(lines)-1], &raw); err != nil {
		return nil, "", fmt.Errorf("bench: reference %q printed no JSON line: %w\n%s", script, err, tail(stdout.String(), 2000))
	}
	ms, _ := raw["ms_per_step"].(float64)
	diff, okDiff := raw["forward_max_abs_diff"].(float64)
	threads, _ := raw["threads"].(float64)
	cpu, _ := raw["cpu_ms_per_step"].(float64)
	if !(ms > 0) || !okDiff {
		return nil, "", fmt.Errorf("bench: reference %q: bad ms_per_step %v / forward_max_abs_diff %v", script, raw["ms_per_step"], raw["forward_max_abs_diff"])
	}
	ref = &tailReference{Python: o.refPython, Script: script, MsPerStep: ms, StepsPerS: 1000 / ms, CPUMsPerStep: cpu, Threads: int(threads),
		Ratio: t.MsPerStep / ms, ForwardMaxDiff: diff, Raw: raw}
	ref.MeetsGoal = ref.Ratio <= 2
	for _, v := range t.Output {
		ref.ForwardMax = math.Max(ref.ForwardMax, math.Abs(float64(v)))
	}
	if !(diff <= 1e-3*ref.ForwardMax) {
		return nil, "", fmt.Errorf("bench: reference %q computes another tail: its output differs from ours by up to %g (ours up to %g)", script, diff, ref.ForwardMax)
	}
	return ref, "", nil
}

// refHeadsPath is the absolute path of ../shared/reference/ref_heads.py.
func refHeadsPath() string {
	ref := filepath.Join(pipeline.SharedDir(), "reference", "ref_heads.py")
	if abs, err := filepath.Abs(ref); err == nil {
		ref = abs
	}
	return ref
}

// preprocessOf converts the run config's preprocessing to the data package's.
func preprocessOf(p pipeline.PreprocessConfig) data.Preprocess {
	return data.Preprocess{Height: p.Size[0], Width: p.Size[1], Resize: p.Resize, ResizeShorter: p.ResizeShorter,
		Mean: p.Mean, Std: p.Std, Scale: p.Scale, ChannelOrder: p.ChannelOrder}
}

// benchExtract measures the first n images of cfg.Data, rounds times each way.
func benchExtract(ctx context.Context, cfg pipeline.Config, n, rounds int, logw io.Writer) (extractBench, error) {
	res := extractBench{Model: cfg.Backbone.Path, Batch: cfg.Backbone.BatchSize, Threads: cfg.Threads,
		Workers: cfg.Preprocess.Workers, Rounds: rounds}
	ds, err := data.Load(cfg.Data)
	if err != nil {
		return res, err
	}
	if n > len(ds.Items) {
		return res, fmt.Errorf("%w: --images %d but %q has %d images", errUsage, n, ds.Source, len(ds.Items))
	}
	res.Images = n
	sub := &data.Dataset{Root: ds.Root, Items: ds.Items[:n], Classes: ds.Classes, Source: ds.Source}
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	pre := preprocessOf(cfg.Preprocess)
	if err := pre.Validate(); err != nil {
		return res, fmt.Errorf("%w: %v", pipeline.ErrConfig, err)
	}
	chw := pre.Size()
	bb, err := backbone.Open(cfg.Backbone.Path, backbone.Options{Feature: cfg.Backbone.Feature,
		LibraryPath: cfg.OnnxRuntime, Threads: cfg.Threads})
	if err != nil {
		return res, err
	}
	defer bb.Close()
	d := bb.Dim()
	model, err := onnxpb.Marshal(bb.Cut())
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	bare, err := ort.NewSession(model, ort.Options{Threads: cfg.Threads})
	if err != nil {
		return res, fmt.Errorf("bench: bare session: %w", err)
	}
	defer bare.Close()

	// Decode once (untimed) for the bare session; this also warms the page cache for every side.
	loader := data.Loader{Preprocess: pre, BatchSize: cfg.Backbone.BatchSize, Workers: cfg.Preprocess.Workers}
	var decoded []data.Batch
	if err := loader.Each(ctx, sub, items, func(b data.Batch) error {
		decoded = append(decoded, b)
		return nil
	}); err != nil {
		return res, err
	}
	out := make([]float32, cfg.Backbone.BatchSize*d)
	for _, b := range []data.Batch{decoded[0], decoded[len(decoded)-1]} { // bind every batch size once
		if err := bare.Run(b.Data[:b.N*chw], b.N, out); err != nil {
			return res, fmt.Errorf("bench: bare session: %w", err)
		}
		if err := bb.Features(b.Data[:b.N*chw], b.N, out); err != nil {
			return res, err
		}
	}

	runBare := func() (float64, error) {
		start := time.Now()
		for _, b := range decoded {
			if err := bare.Run(b.Data[:b.N*chw], b.N, out); err != nil {
				return 0, fmt.Errorf("bench: bare session: %w", err)
			}
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
	runDecode := func() (float64, error) { // the loader alone
		start := time.Now()
		for b := range data.Batches(ctx, sub, items, pre, cfg.Backbone.BatchSize, cfg.Preprocess.Workers) {
			if b.Err != nil {
				return 0, b.Err
			}
			b.Release()
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
	all := make([]float32, n*d)
	runPipeline := func() (float64, error) { // the loop of pipeline/extract.go, without the cache
		start := time.Now()
		for b := range data.Batches(ctx, sub, items, pre, cfg.Backbone.BatchSize, cfg.Preprocess.Workers) {
			if b.Err != nil {
				return 0, b.Err
			}
			if err := bb.Features(b.Data[:b.N*chw], b.N, all[b.Start*d:(b.Start+b.N)*d]); err != nil {
				return 0, err
			}
			b.Release()
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
	// One untimed pass of the pipeline starts its goroutines' threads and fills the buffer pools.
	if _, err := runPipeline(); err != nil {
		return res, err
	}
	res.BareCPU, res.PipelineCPU, res.DecodeCPU = math.Inf(1), math.Inf(1), math.Inf(1)
	var decodeRounds []float64
	for r := range rounds {
		order := []struct {
			name string
			fn   func() (float64, error)
			dst  *[]float64
			cpu  *float64
		}{{"bare onnxruntime", runBare, &res.BareRounds, &res.BareCPU}, {"pipeline", runPipeline, &res.PipelineRounds, &res.PipelineCPU},
			{"decoding alone", runDecode, &decodeRounds, &res.DecodeCPU}}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, s := range order {
			c0 := cputime.Seconds()
			v, err := s.fn()
			if err != nil {
				return res, err
			}
			cpu := (cputime.Seconds() - c0) * 1000 / float64(n)
			*s.dst = append(*s.dst, v)
			*s.cpu = min(*s.cpu, cpu)
			fmt.Fprintf(logw, "bench: round %d: %s %.1f images/s, %.2f CPU ms/image\n", r+1, s.name, v, cpu)
		}
	}
	res.Pipeline, res.Bare, res.Decode = slices.Max(res.PipelineRounds), slices.Max(res.BareRounds), slices.Max(decodeRounds)
	for r := range rounds {
		res.RoundRatios = append(res.RoundRatios, res.PipelineRounds[r]/res.BareRounds[r])
	}
	res.Ratio = median(res.RoundRatios)
	res.BestRatio = res.Pipeline / res.Bare
	res.MeetsGoal = res.Ratio >= 0.9
	fmt.Fprintf(logw, "bench: extraction pipeline %.1f vs bare %.1f images/s (best rounds); ratio %.3f (median of the rounds' %s); decoding alone %.1f images/s, %.2f CPU ms/image\n",
		res.Pipeline, res.Bare, res.Ratio, fmtRatios(res.RoundRatios), res.Decode, res.DecodeCPU)
	return res, nil
}

// median returns the median of v (the mean of the middle two for an even count); v is not changed.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func fmtRatios(v []float64) string {
	parts := make([]string, len(v))
	for i, r := range v {
		parts[i] = strconv.FormatFloat(r, 'f', 3, 64)
	}
	return strings.Join(parts, " ")
}

// benchHead times steps head training steps (head.Step + Adam) after a few untimed ones.
func benchHead(ctx context.Context, steps int) (headBench, error) {
	gl := head.DefaultGroupLoss()
	n := benchClassesPerBatch * benchSamplesPerClass
	res := headBench{Steps: steps, Batch: n, In: benchIn, Emb: benchEmb, Classes: benchClasses,
		Optimizer: string(train.OptAdam), Temperature: gl.Temperature, Iterations: gl.Iterations,
		Anchors: gl.AnchorsPerClass, Procs: runtime.GOMAXPROCS(0)}
	rng := rand.New(rand.NewSource(1))
	h, err := head.New(head.Config{In: benchIn, Emb: benchEmb, Classes: benchClasses, DType: head.Float32}, rng)
	if err != nil {
		return res, err
	}
	var params []train.Tensor
	for _, p := range h.Params() {
		params = append(params, train.Tensor{Name: p.Name, Value: p.Value, Grad: p.Grad})
	}
	opt, err := train.NewOptimizer(train.OptAdam, benchWeightDecay)
	if err != nil {
		return res, err
	}
	// A few distinct batches of random unit-length features, 6 random classes x 9 samples each.
	const pool = 8
	xs, ys := make([][]float32, pool), make([][]int, pool)
	for k := range pool {
		x := make([]float32, n*benchIn)
		for i := range n {
			row := x[i*benchIn : (i+1)*benchIn]
			for j := range row {
				row[j] = float32(rng.NormFloat64())
			}
		}
		rowops.L2Normalize(x, benchIn)
		classes := rng.Perm(benchClasses)[:benchClassesPerBatch]
		y := make([]int, 0, n)
		for _, c := range classes {
			for range benchSamplesPerClass {
				y = append(y, c)
			}
		}
		xs[k], ys[k] = x, y
	}
	step := func(i int) error {
		if _, err := h.Step(xs[i%pool], n, ys[i%pool], nil, gl); err != nil {
			return err
		}
		opt.Step(params, benchLR)
		return nil
	}
	for i := range 3 { // builds and caches the graph
		if err := step(i); err != nil {
			return res, err
		}
	}
	start := time.Now()
	for i := range steps {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := step(i); err != nil {
			return res, err
		}
	}
	secs := time.Since(start).Seconds()
	res.StepsPerS = float64(steps) / secs
	res.MsPerStep = 1000 * secs / float64(steps)
	return res, nil
}

// benchReference runs scripts/bench_ref_head.py with o.refPython and parses its JSON line.
func benchReference(ctx context.Context, o benchOptions, ours float64) (*referenceBench, error) {
	script := o.refScript
	if script == "" {
		script = findRepoFile(filepath.Join("scripts", "bench_ref_head.py"))
		if script == "" {
			return nil, errors.New("bench: scripts/bench_ref_head.py not found above the working directory or the executable; pass --reference-script")
		}
	}
	cmd := exec.CommandContext(ctx, o.refPython, script, "--ref", refHeadsPath(), "--epochs", fmt.Sprint(o.refEpochs))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("bench: reference %q %q: %w\n%s", o.refPython, script, err, tail(stderr.String(), 2000))
	}
	var raw map[string]any
	lines := bytes.Split(bytes.TrimSpace(stdout.Bytes()), []byte("\n"))
	if err := json.Unmarshal(lines[len(lines)-1], &raw); err != nil {
		return nil, fmt.Errorf("bench: reference %q printed no JSON line: %w\n%s", script, err, tail(stdout.String(), 2000))
	}
	sps, _ := raw["steps_per_s"].(float64)
	ms, _ := raw["ms_per_step"].(float64)
	if !(sps > 0) || !(ms > 0) {
		return nil, fmt.Errorf("bench: reference %q: bad steps_per_s %v / ms_per_step %v", script, raw["steps_per_s"], raw["ms_per_step"])
	}
	return &referenceBench{Python: o.refPython, Script: script, StepsPerS: sps, MsPerStep: ms,
		Speedup: ours / sps, MeetsGoal: ours >= sps, Raw: raw}, nil
}

// loadAverage returns the 1, 5 and 15 minute load averages, or nil.
func loadAverage() []float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	var l [3]float64
	if _, err := fmt.Sscan(string(b), &l[0], &l[1], &l[2]); err != nil {
		return nil
	}
	return l[:]
}

// findRepoFile returns rel under the first folder holding go.mod at or above the working
// directory or the executable's directory, or "".
func findRepoFile(rel string) string {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, dir := range starts {
		for ; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				if p := filepath.Join(dir, rel); fileExists(p) {
					return p
				}
				break
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	return ""
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// tail returns the last max bytes of s.
func tail(s string, max int) string {
	if len(s) > max {
		return "..." + s[len(s)-max:]
	}
	return s
}
