package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand"
	"runtime"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/internal/cputime"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/train"
)

// TailBench is the speed of a training step of tail fine-tuning (`pipeline bench`, tail section).
type TailBench struct {
	TrainBlocks   int    `json:"train_blocks,omitempty"`
	TrainableFrom string `json:"trainable_from,omitempty"`
	From          string `json:"from"` // cut tensor
	To            string `json:"to"`   // feature tensor
	// ActivationShape is the per-sample shape of the cut tensor, e.g. [160 7 7].
	ActivationShape []int  `json:"activation_shape"`
	Features        int    `json:"features"`    // values per sample of To
	TailParams      int    `json:"tail_params"` // trained backbone values
	Batch           int    `json:"batch"`
	Classes         int    `json:"classes"`
	Emb             int    `json:"emb"`
	Optimizer       string `json:"optimizer"`
	Loss            string `json:"loss"`
	Warmup          int    `json:"warmup_steps"`
	Steps           int    `json:"steps"` // timed
	// MsPerStep is the wall time of one step in train.Fit: the batch copy, one run of the single
	// gorgonia graph (tail, feature transform, head, loss and the gradient pass), the optimizer
	// update of head and tail, and the finiteness check.
	MsPerStep float64 `json:"ms_per_step"`
	StepsPerS float64 `json:"steps_per_s"`
	// CPUMsPerStep is the process's CPU time (user + system, all threads) per timed step: less
	// sensitive than MsPerStep to other work on the machine.
	CPUMsPerStep float64 `json:"cpu_ms_per_step"`
	Procs        int     `json:"gomaxprocs"`

	// What a reference implementation needs to build and check the same step (not in the JSON):
	// the float backbone the tail was decoded from, the batch (Batch rows of
	// prod(ActivationShape) float32 values, N(0, 2²)), its classifier labels (contiguous per
	// class), and the tail's output for it with the initial parameters (Batch rows of Features).
	Float  *onnx.ModelProto `json:"-"`
	Input  []float32        `json:"-"`
	Labels []int            `json:"-"`
	Output []float32        `json:"-"`
}

// BenchTail times steps training steps of tail fine-tuning as `pipeline run` trains with
// cfg.Backbone.TrainBlocks (or TrainableFrom): train.Fit over the run's tail model (the decoded
// tail of the float backbone, cfg's feature transform, loss and head with classes outputs, cfg's
// optimizer with the head's and the backbone's learning rates), on one batch of
// cfg.Sampler.ClassesPerBatch classes x SamplesPerClass random activations at the cut, after
// warmup untimed steps. It opens cfg's backbone (onnxruntime is initialized from
// cfg.OnnxRuntime) to resolve the cut as a run does; errors are a run's (config.ErrInvalid for a cut the
// model cannot train).
func BenchTail(ctx context.Context, cfg config.Config, classes, steps, warmup int) (*TailBench, error) {
	if !cfg.Backbone.TrainsTail() {
		return nil, fmt.Errorf("%w: bench tail: backbone.train_blocks or trainable_from must be set", config.ErrInvalid)
	}
	if classes < cfg.Sampler.ClassesPerBatch || steps < 1 || warmup < 0 {
		return nil, fmt.Errorf("%w: bench tail: %d classes (want >= %d classes per batch), %d steps, %d warmup steps",
			config.ErrInvalid, classes, cfg.Sampler.ClassesPerBatch, steps, warmup)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	bb, err := backbone.Open(cfg.Backbone.Path, backbone.Options{Feature: cfg.Backbone.Feature,
		LibraryPath: cfg.OnnxRuntime, Threads: cfg.Threads})
	if err != nil {
		return nil, backboneHint(err)
	}
	defer bb.Close()
	r := &runner{cfg: cfg, env: RunEnv{Log: slog.New(slog.DiscardHandler)}, sum: &Summary{}, bb: bb}
	s, err := r.prepareTail()
	if err != nil {
		return nil, err
	}
	res := &TailBench{TrainBlocks: cfg.Backbone.TrainBlocks, TrainableFrom: cfg.Backbone.TrainableFrom,
		From: s.cut, To: s.feature, ActivationShape: s.shape,
		Classes: classes, Emb: cfg.Head.EmbeddingDim, Optimizer: string(cfg.Optimizer.Name), Loss: string(cfg.Loss.Name),
		Warmup: warmup, Steps: steps, Procs: runtime.GOMAXPROCS(0), Float: s.float}
	for _, p := range s.graph.Params() {
		res.TailParams += len(p.Value)
	}

	// The batch: classes drawn at random, samples contiguous per class, as the sampler gives them.
	rng := rand.New(rand.NewSource(cfg.Seed))
	cpb, spc := cfg.Sampler.ClassesPerBatch, cfg.Sampler.SamplesPerClass
	n, in := cpb*spc, prodInts(s.shape)
	res.Batch = n
	for _, c := range rng.Perm(classes)[:cpb] {
		for range spc {
			res.Labels = append(res.Labels, c)
		}
	}
	res.Input = make([]float32, n*in)
	for i := range res.Input {
		res.Input[i] = float32(2 * rng.NormFloat64())
	}

	m := &tailModel{tail: s.graph, params: s.graph.Params(), inDim: in, views: 1,
		headModel: &headModel{normalize: cfg.Head.Normalize, loss: cfg.Loss.HeadLoss()}}
	out, err := m.tail.Infer([][]float32{res.Input}, n)
	if err != nil {
		return nil, err
	}
	res.Output = out
	m.featDim = len(out) / n
	res.Features = m.featDim
	if cfg.Head.Center {
		m.center = make([]float32, m.featDim) // the cost of centering, not its values
	}
	if m.h, err = head.New(head.Config{In: m.featDim, Emb: cfg.Head.EmbeddingDim, Classes: classes, DType: head.Float32}, rng); err != nil {
		return nil, err
	}
	m.setTensors()
	opt, err := newSplitOptimizer(cfg)
	if err != nil {
		return nil, err
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	batch := func(idx []int, dst []float32, _ *rand.Rand) {
		for i, k := range idx {
			copy(dst[i*in:(i+1)*in], res.Input[k*in:(k+1)*in])
		}
	}
	fit := func(steps int) (train.Result, error) {
		return train.Fit(ctx, m, opt, repeatSampler{batch: idx, steps: steps}, batch, res.Labels, in,
			train.Options{Epochs: 1, LR: cfg.Optimizer.LR, AnchorsPerClass: cfg.Loss.AnchorsPerClass, Seed: cfg.Seed}, train.Hooks{})
	}
	if warmup > 0 {
		if _, err := fit(warmup); err != nil {
			return nil, err
		}
	}
	cpu0 := cputime.Seconds()
	fr, err := fit(steps)
	if err != nil {
		return nil, err
	}
	res.CPUMsPerStep = 1000 * (cputime.Seconds() - cpu0) / float64(steps)
	res.MsPerStep = 1000 * fr.Seconds / float64(steps)
	res.StepsPerS = float64(steps) / fr.Seconds
	return res, nil
}

// repeatSampler yields the same batch steps times per epoch.
type repeatSampler struct {
	batch []int
	steps int
}

func (s repeatSampler) Epoch(*rand.Rand) [][]int {
	b := make([][]int, s.steps)
	for i := range b {
		b[i] = s.batch
	}
	return b
}
