package main

import "github.com/grouploss/pipeline/pipeline"

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
	// Ratio is our ms/step over PyTorch's; the goal is <= 0.8.
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
	Speedup   float64        `json:"head_speedup"` // our steps/s over the reference's; the goal is >= 2
	MeetsGoal bool           `json:"head_at_least_as_fast"`
	Raw       map[string]any `json:"raw"` // the script's whole output
}
