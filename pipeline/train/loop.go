// Package train implements the training loop of the embedding head: the classes x samples
// sampler, Adam/RAdam, learning-rate steps, model selection on held-out classes and the
// non-finite guard. It knows nothing of files; the pipeline package does the orchestration.
package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"slices"
	"time"
)

// ErrNonFinite is returned when the loss or a parameter becomes NaN or Inf.
var ErrNonFinite = errors.New("train: non-finite value")

// Model is what Fit trains.
type Model interface {
	// Tensors returns the trainable parameters; Step fills their Grad.
	Tensors() []Tensor
	// Step computes the loss of one batch (x is n rows of features, labels are class ids in
	// [0, classes), anchors marks the samples pinned to their labels) and its gradients.
	Step(x []float32, n int, labels []int, anchors []bool) (loss float64, err error)
}

// Options are the loop's settings.
type Options struct {
	Epochs          int
	LR              float64
	LRSteps         []int   // epochs after which lr *= LRGamma
	LRGamma         float64 // default 0.1
	AnchorsPerClass int
	Seed            int64
	// Patience stops training when the validation score has not improved for this many epochs
	// (0: never stop early).
	Patience int
	// Resume continues an interrupted Fit from the State its Checkpoint hook received: parameters,
	// optimizer, learning rate, best-so-far and history are restored and training goes on at
	// epoch State.Epoch+1. With the same model, data, sampler and options, the result equals an
	// uninterrupted Fit exactly (each epoch draws from its own generator, see EpochSeed).
	Resume *State
	// ReloadBestAfter lists epochs (1-based, as LRSteps) after which the parameters are reset to
	// those of the best epoch so far, after any learning-rate step of that epoch; training goes on
	// from them. The optimizer's state (moments, step count) is kept, as in the Group Loss
	// reference code (train.py reloads the model's state_dict at the start of epochs 31 and 51 and
	// only changes the learning rate of its existing RAdam). Without a Validate hook the best
	// epoch is the last one and the reset changes nothing.
	ReloadBestAfter []int
	// PretrainEpochs > 0 trains the first PretrainEpochs epochs with the model's pretraining loss
	// (the model must implement Pretrainer); the model's own loss takes over at epoch
	// PretrainEpochs+1 from the parameters of epoch PretrainEpochs (not the best ones), with the
	// optimizer's state reset, as the reference's train.py starts a new RAdam on the network its
	// train_finetune.py fine-tuned for classification. The learning rate follows LR and LRSteps
	// throughout. Pretraining epochs are validated and take part in model selection like the others.
	PretrainEpochs int
	// EMA > 0 validates, selects and returns an exponential moving average of the parameters
	// instead of the parameters themselves: after every step avg = d*avg + (1-d)*params with
	// d = min(EMA, (1+t)/(10+t)) at step t (the average forgets its start quickly), so the
	// model kept is the mean of the last ~1/(1-EMA) steps rather than the last step's point
	// on Adam's noisy path. Training itself goes on from the raw parameters.
	EMA float64
}

// State is where training stands after a completed epoch: what Options.Resume needs to continue
// exactly. Fit hands the Checkpoint hook a State whose slices are copies.
type State struct {
	Epoch     int         // epochs completed
	LR        float64     // learning rate of the next epoch
	Params    [][]float64 // parameters after Epoch, in Model.Tensors order
	Best      [][]float64 // parameters of the best epoch so far (the last one without validation)
	BestEpoch int
	BestScore float64
	Since     int  // epochs without improvement (early stopping)
	Stopped   bool // early stopping ended training after Epoch
	Steps     int
	History   []EpochStats
	Optimizer OptimizerState
	// EMA is the moving average of the parameters (Options.EMA; nil without it).
	EMA [][]float64
}

// EpochSeed is the seed of epoch's random generator (sampling and augmentation): a mix of the
// run's seed and the epoch, so that any epoch can be replayed on its own.
func EpochSeed(seed int64, epoch int) int64 {
	z := uint64(seed)*0x9e3779b97f4a7c15 + uint64(epoch)*0xbf58476d1ce4e5b9 + 0x94d049bb133111eb
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return int64(z ^ (z >> 31))
}

// Pretrainer is a Model with a second loss for the first epochs (Options.PretrainEpochs), e.g.
// the softmax cross-entropy of its classifier before a metric-learning loss.
type Pretrainer interface {
	Model
	// SetPretraining switches Step to the pretraining loss (on) or back to the model's loss.
	SetPretraining(on bool)
}

// Batch fills dst with the features of the samples idx (row-major, len(idx) rows) for one
// training step; rng may be used for augmentation.
type Batch func(idx []int, dst []float32, rng *rand.Rand)

// Hooks connect the loop to validation, checkpoints and progress reporting. Any may be nil.
type Hooks struct {
	// Validate returns the model-selection score of the current parameters (higher is better).
	// It is called before training (epoch 0) and after every epoch.
	Validate func(epoch int) (float64, error)
	// Best is called when the score improved, after the parameters were snapshotted.
	Best func(epoch int, score float64) error
	// Epoch is called after each epoch with its statistics.
	Epoch func(EpochStats)
	// Checkpoint is called at the end of each epoch (after Best and Epoch) with the state that
	// Options.Resume continues from; an error stops training.
	Checkpoint func(State) error
}

// EpochStats records one epoch.
type EpochStats struct {
	Epoch   int     `json:"epoch"`
	Loss    float64 `json:"loss"`
	LR      float64 `json:"lr"`
	Score   float64 `json:"validation_score"`
	Seconds float64 `json:"seconds"`
	Steps   int     `json:"steps"`
	// Pretrain marks the epochs trained with the pretraining loss (Options.PretrainEpochs).
	Pretrain bool `json:"pretrain,omitempty"`
	// ReloadBest marks the epochs after which the parameters were reset to the best epoch's
	// (Options.ReloadBestAfter).
	ReloadBest bool `json:"reload_best,omitempty"`
}

// Result is what Fit returns.
type Result struct {
	BestEpoch int          `json:"best_epoch"`
	BestScore float64      `json:"best_score"`
	Epochs    int          `json:"epochs"`
	Steps     int          `json:"steps"`
	History   []EpochStats `json:"history"`
	Seconds   float64      `json:"train_seconds"`
}

// Fit trains m and leaves it holding the parameters of the best validated epoch (the last epoch
// when there is no Validate hook). labels are the classifier ids of the training samples;
// dim is the number of features per sample. Epoch e draws its batches and augmentation from a
// generator seeded with EpochSeed(o.Seed, e).
func Fit(ctx context.Context, m Model, opt Optimizer, s Sampler, batch Batch, labels []int, dim int, o Options, h Hooks) (Result, error) {
	if o.LRGamma == 0 {
		o.LRGamma = 0.1
	}
	var res Result
	var pre Pretrainer
	if o.PretrainEpochs > 0 {
		p, ok := m.(Pretrainer)
		if !ok {
			return res, fmt.Errorf("train: %d pretraining epochs: the model %T has no pretraining loss (it does not implement train.Pretrainer)", o.PretrainEpochs, m)
		}
		pre = p
		defer pre.SetPretraining(false)
	}
	params := m.Tensors()
	best := snapshot(params, nil)
	var ema, raw [][]float64 // the moving average (Options.EMA) and the raw parameters while it is validated
	if o.EMA > 0 {
		ema = snapshot(params, nil)
	}
	res.BestScore = math.Inf(-1)
	lr := o.LR
	since, first := 0, 1
	stopped := false
	if st := o.Resume; st != nil {
		if err := st.check(params); err != nil {
			return res, err
		}
		load(params, st.Params)
		best = snapshot2(st.Best)
		if ema != nil {
			if len(st.EMA) == len(params) {
				ema = snapshot2(st.EMA)
			} else { // a state saved without the average: it starts again from the parameters
				ema = snapshot(params, ema)
			}
		}
		if err := opt.SetState(cloneOptState(st.Optimizer)); err != nil {
			return res, fmt.Errorf("train: resume: %w", err)
		}
		res.BestEpoch, res.BestScore, res.Epochs, res.Steps = st.BestEpoch, st.BestScore, st.Epoch, st.Steps
		res.History = append([]EpochStats(nil), st.History...)
		lr, since, first, stopped = st.LR, st.Since, st.Epoch+1, st.Stopped
	} else if h.Validate != nil {
		score, err := h.Validate(0)
		if err != nil {
			return res, err
		}
		res.BestScore = score
		res.History = append(res.History, EpochStats{Epoch: 0, Score: score})
		if h.Best != nil {
			if err := h.Best(0, score); err != nil {
				return res, err
			}
		}
	}
	start := time.Now()
	var x []float32
	for epoch := first; epoch <= o.Epochs && !stopped; epoch++ {
		t0 := time.Now()
		rng := rand.New(rand.NewSource(EpochSeed(o.Seed, epoch)))
		pretrain := epoch <= o.PretrainEpochs
		if pre != nil {
			pre.SetPretraining(pretrain)
			if epoch == o.PretrainEpochs+1 {
				if err := opt.SetState(OptimizerState{M: map[string][]float64{}, V: map[string][]float64{}}); err != nil {
					return res, fmt.Errorf("train: resetting the optimizer after pretraining: %w", err)
				}
			}
		}
		var sum float64
		var n int
		for _, b := range s.Epoch(rng) {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			if need := len(b) * dim; cap(x) < need {
				x = make([]float32, need)
			}
			x = x[:len(b)*dim]
			batch(b, x, rng)
			y := make([]int, len(b))
			for i, idx := range b {
				y[i] = labels[idx]
			}
			loss, err := m.Step(x, len(b), y, Anchors(y, o.AnchorsPerClass))
			if err != nil {
				return res, fmt.Errorf("train: epoch %d step %d: %w", epoch, res.Steps+1, err)
			}
			if math.IsNaN(loss) || math.IsInf(loss, 0) {
				return res, fmt.Errorf("%w: loss is %g at epoch %d step %d", ErrNonFinite, loss, epoch, res.Steps+1)
			}
			opt.Step(params, lr)
			if name, ok := finite(params); !ok {
				return res, fmt.Errorf("%w: parameter %q after epoch %d step %d", ErrNonFinite, name, epoch, res.Steps+1)
			}
			if ema != nil {
				average(ema, params, min(o.EMA, float64(1+res.Steps)/float64(10+res.Steps)))
			}
			sum += loss
			n++
			res.Steps++
		}
		st := EpochStats{Epoch: epoch, LR: lr, Steps: n, Pretrain: pretrain, ReloadBest: slices.Contains(o.ReloadBestAfter, epoch)}
		if n > 0 {
			st.Loss = sum / float64(n)
		}
		res.Epochs = epoch
		if ema != nil { // validate, select and save the average; training goes on from raw
			raw = snapshot(params, raw)
			load(params, ema)
		}
		improved := h.Validate == nil
		if h.Validate != nil {
			score, err := h.Validate(epoch)
			if err != nil {
				return res, err
			}
			st.Score = score
			improved = score > res.BestScore
		}
		st.Seconds = time.Since(t0).Seconds()
		res.History = append(res.History, st)
		if improved {
			res.BestEpoch, res.BestScore = epoch, st.Score
			best = snapshot(params, best)
			since = 0
			if h.Best != nil {
				if err := h.Best(epoch, st.Score); err != nil {
					return res, err
				}
			}
		} else {
			since++
		}
		if ema != nil {
			load(params, raw)
		}
		if h.Epoch != nil {
			h.Epoch(st)
		}
		for _, s := range o.LRSteps {
			if s == epoch {
				lr *= o.LRGamma
			}
		}
		if st.ReloadBest {
			load(params, best)
			if ema != nil {
				ema = snapshot(params, ema)
			}
		}
		stopped = o.Patience > 0 && since >= o.Patience
		if h.Checkpoint != nil {
			st := State{Epoch: epoch, LR: lr, Params: snapshot(params, nil), Best: snapshot2(best),
				BestEpoch: res.BestEpoch, BestScore: res.BestScore, Since: since, Stopped: stopped, Steps: res.Steps,
				History: append([]EpochStats(nil), res.History...), Optimizer: cloneOptState(opt.State())}
			if ema != nil {
				st.EMA = snapshot2(ema)
			}
			if err := h.Checkpoint(st); err != nil {
				return res, err
			}
		}
	}
	res.Seconds = time.Since(start).Seconds()
	load(params, best)
	return res, nil
}

// average moves avg towards params: avg = d*avg + (1-d)*params.
func average(avg [][]float64, params []Tensor, d float64) {
	for i, p := range params {
		a := avg[i]
		for k, v := range p.Value {
			a[k] = d*a[k] + (1-d)*v
		}
	}
}

// Anchors marks the first perClass samples of each class in labels, as the reference does.
func Anchors(labels []int, perClass int) []bool {
	a := make([]bool, len(labels))
	seen := map[int]int{}
	for i, l := range labels {
		if seen[l] < perClass {
			a[i] = true
		}
		seen[l]++
	}
	return a
}

// load copies from (in Tensors order, as snapshot makes it) into the parameters' values.
func load(params []Tensor, from [][]float64) {
	for i, p := range params {
		copy(p.Value, from[i])
	}
}

func snapshot(params []Tensor, into [][]float64) [][]float64 {
	if into == nil {
		into = make([][]float64, len(params))
	}
	for i, p := range params {
		into[i] = append(into[i][:0], p.Value...)
	}
	return into
}

func snapshot2(src [][]float64) [][]float64 {
	out := make([][]float64, len(src))
	for i, v := range src {
		out[i] = append([]float64(nil), v...)
	}
	return out
}

func cloneOptState(s OptimizerState) OptimizerState {
	c := OptimizerState{Steps: s.Steps, M: make(map[string][]float64, len(s.M)), V: make(map[string][]float64, len(s.V))}
	for k, v := range s.M {
		c.M[k] = append([]float64(nil), v...)
	}
	for k, v := range s.V {
		c.V[k] = append([]float64(nil), v...)
	}
	return c
}

// check reports whether st fits the parameters params.
func (st *State) check(params []Tensor) error {
	if st.Epoch < 0 || len(st.Params) != len(params) || len(st.Best) != len(params) {
		return fmt.Errorf("train: resume: the state holds %d parameter tensors (epoch %d), the model %d", len(st.Params), st.Epoch, len(params))
	}
	for i, p := range params {
		if len(st.Params[i]) != len(p.Value) || len(st.Best[i]) != len(p.Value) {
			return fmt.Errorf("train: resume: parameter %q has %d values, the state %d", p.Name, len(p.Value), len(st.Params[i]))
		}
	}
	return nil
}

func finite(params []Tensor) (string, bool) {
	for _, p := range params {
		for _, v := range p.Value {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return p.Name, false
			}
		}
	}
	return "", true
}
