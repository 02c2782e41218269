package train

import (
	"context"
	"errors"
	"math"
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

// quadratic is a toy model: loss = mean over the batch of ||w - x_i||^2 / 2, or of
// ||w - x_i - 2||^2 / 2 while pretraining (a different optimum, so that the switch shows).
type quadratic struct {
	w, g     []float64
	nanAt    int
	steps    int
	pretrain bool
	modes    []bool // pretrain of each Step
}

func (q *quadratic) SetPretraining(on bool) { q.pretrain = on }

func (q *quadratic) Tensors() []Tensor { return []Tensor{{Name: "w", Value: q.w, Grad: q.g}} }

func (q *quadratic) Step(x []float32, n int, labels []int, anchors []bool) (float64, error) {
	q.steps++
	if q.steps == q.nanAt {
		return math.NaN(), nil
	}
	q.modes = append(q.modes, q.pretrain)
	shift := 0.0
	if q.pretrain {
		shift = 2
	}
	d := len(q.w)
	clear(q.g)
	var loss float64
	for i := 0; i < n; i++ {
		for j := 0; j < d; j++ {
			r := q.w[j] - float64(x[i*d+j]) - shift
			loss += r * r / 2 / float64(n)
			q.g[j] += r / float64(n)
		}
	}
	return loss, nil
}

func toyData() ([]int, []float32) {
	var labels []int
	var feats []float32
	for c := 0; c < 4; c++ {
		for i := 0; i < 6; i++ {
			labels = append(labels, c)
			feats = append(feats, float32(c), 1)
		}
	}
	return labels, feats
}

func TestFitKeepsBestEpochAndStepsLR(t *testing.T) {
	labels, feats := toyData()
	s, _, _ := NewClassSampler(labels, 2, 3, nil)
	q := &quadratic{w: []float64{5, 5}, g: make([]float64, 2)}
	opt, _ := NewOptimizer(OptAdam, 0)
	batch := func(idx []int, dst []float32, _ *rand.Rand) {
		for i, k := range idx {
			copy(dst[i*2:], feats[k*2:k*2+2])
		}
	}
	var wAtBest []float64
	// The score peaks at epoch 3 and falls afterwards, so Fit must restore epoch 3's weights.
	scores := []float64{0, 1, 2, 5, 4, 3, 2}
	res, err := Fit(context.Background(), q, opt, s, batch, labels, 2,
		Options{Epochs: 6, LR: 0.5, LRSteps: []int{2}, Seed: 1, AnchorsPerClass: 1},
		Hooks{
			Validate: func(e int) (float64, error) { return scores[e], nil },
			Best:     func(int, float64) error { wAtBest = append(wAtBest[:0], q.w...); return nil },
		})
	if err != nil {
		t.Fatal(err)
	}
	if res.BestEpoch != 3 || res.BestScore != 5 || res.Epochs != 6 || len(res.History) != 7 {
		t.Fatalf("result %+v", res)
	}
	if q.w[0] != wAtBest[0] || q.w[1] != wAtBest[1] {
		t.Fatalf("final weights %v are not epoch 3's %v", q.w, wAtBest)
	}
	if res.History[1].LR != 0.5 || res.History[2].LR != 0.5 || res.History[3].LR != 0.05 {
		t.Fatalf("lr schedule: %+v", res.History)
	}
	if q.w[1] > 2 {
		t.Fatalf("did not move towards the data: %v", q.w)
	}
}

func TestFitStopsOnNaNAndEarlyStops(t *testing.T) {
	labels, feats := toyData()
	s, _, _ := NewClassSampler(labels, 2, 3, nil)
	batch := func(idx []int, dst []float32, _ *rand.Rand) {
		for i, k := range idx {
			copy(dst[i*2:], feats[k*2:k*2+2])
		}
	}
	q := &quadratic{w: []float64{5, 5}, g: make([]float64, 2), nanAt: 7}
	opt, _ := NewOptimizer(OptRAdam, 0)
	_, err := Fit(context.Background(), q, opt, s, batch, labels, 2, Options{Epochs: 5, LR: 0.1}, Hooks{})
	if !errors.Is(err, ErrNonFinite) {
		t.Fatalf("NaN loss: got %v", err)
	}
	q = &quadratic{w: []float64{5, 5}, g: make([]float64, 2)}
	res, err := Fit(context.Background(), q, opt, s, batch, labels, 2, Options{Epochs: 50, LR: 0.1, Patience: 2},
		Hooks{Validate: func(e int) (float64, error) { return -float64(e), nil }})
	if err != nil || res.Epochs != 2 || res.BestEpoch != 0 {
		t.Fatalf("early stop: %+v %v", res, err)
	}
	if q.w[0] != 5 || q.w[1] != 5 {
		t.Fatalf("epoch-0 weights not restored: %v", q.w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Fit(ctx, q, opt, s, batch, labels, 2, Options{Epochs: 1, LR: 0.1}, Hooks{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestAnchors(t *testing.T) {
	got := Anchors([]int{4, 4, 4, 7, 7, 7}, 2)
	want := []bool{true, true, false, true, true, false}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%v", got)
		}
	}
}

// TestFitReloadBestAfter: after each epoch of ReloadBestAfter (and its lr step) the parameters
// are those of the best epoch so far, the optimizer's state is kept, and the history says so.
func TestFitReloadBestAfter(t *testing.T) {
	labels, feats := toyData()
	s, _, _ := NewClassSampler(labels, 2, 3, nil)
	batch := func(idx []int, dst []float32, _ *rand.Rand) {
		for i, k := range idx {
			copy(dst[i*2:], feats[k*2:k*2+2])
		}
	}
	q := &quadratic{w: []float64{5, 5}, g: make([]float64, 2)}
	opt, _ := NewOptimizer(OptAdam, 0)
	// Epoch 2 is the best of epochs 0-3; epoch 5 the best of 0-5.
	scores := []float64{0, 1, 5, 2, 3, 6, 4}
	best := map[int][]float64{}
	var states []State
	res, err := Fit(context.Background(), q, opt, s, batch, labels, 2,
		Options{Epochs: 6, LR: 0.5, LRSteps: []int{3}, ReloadBestAfter: []int{3, 5}, Seed: 1},
		Hooks{
			Validate:   func(e int) (float64, error) { return scores[e], nil },
			Best:       func(e int, _ float64) error { best[e] = append([]float64(nil), q.w...); return nil },
			Checkpoint: func(st State) error { states = append(states, st); return nil },
		})
	if err != nil {
		t.Fatal(err)
	}
	if res.BestEpoch != 5 || len(states) != 6 {
		t.Fatalf("result %+v, %d checkpoints", res, len(states))
	}
	for e := 1; e <= 6; e++ {
		st := states[e-1]
		if got, want := res.History[e].ReloadBest, e == 3 || e == 5; got != want {
			t.Errorf("history[%d].ReloadBest = %v", e, got)
		}
		switch e {
		case 3: // reloads epoch 2, the best so far
			if !reflect.DeepEqual(st.Params[0], best[2]) {
				t.Errorf("after epoch 3: parameters %v, want epoch 2's %v", st.Params[0], best[2])
			}
		case 5: // epoch 5 is itself the best: nothing changes
			if !reflect.DeepEqual(st.Params[0], best[5]) {
				t.Errorf("after epoch 5: parameters %v, want epoch 5's %v", st.Params[0], best[5])
			}
		default:
			if e > 1 && reflect.DeepEqual(st.Params[0], states[e-2].Params[0]) {
				t.Errorf("epoch %d did not train", e)
			}
		}
		// The optimizer keeps counting: every step of every epoch.
		if st.Optimizer.Steps != st.Steps {
			t.Errorf("after epoch %d: optimizer steps %d, loop steps %d", e, st.Optimizer.Steps, st.Steps)
		}
	}
	if res.History[3].LR != 0.5 || res.History[4].LR != 0.05 {
		t.Errorf("lr: %+v", res.History)
	}
}

// TestFitPretrainSwitch: the first PretrainEpochs epochs step with the pretraining loss, the rest
// with the model's, the optimizer restarts at the switch, the history marks the pretraining
// epochs, and the model is left with its own loss.
func TestFitPretrainSwitch(t *testing.T) {
	labels, feats := toyData()
	s, _, _ := NewClassSampler(labels, 2, 3, nil)
	batch := func(idx []int, dst []float32, _ *rand.Rand) {
		for i, k := range idx {
			copy(dst[i*2:], feats[k*2:k*2+2])
		}
	}
	q := &quadratic{w: []float64{5, 5}, g: make([]float64, 2)}
	opt, _ := NewOptimizer(OptRAdam, 0)
	var states []State
	res, err := Fit(context.Background(), q, opt, s, batch, labels, 2, Options{Epochs: 5, LR: 0.3, PretrainEpochs: 2, Seed: 3},
		Hooks{Checkpoint: func(st State) error { states = append(states, st); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	pre := res.History[0].Steps + res.History[1].Steps // steps of epochs 1 and 2
	if pre == 0 || len(q.modes) != res.Steps || res.Steps <= pre {
		t.Fatalf("%d steps recorded, %d in all, %d in epochs 1-2", len(q.modes), res.Steps, pre)
	}
	for i, m := range q.modes {
		if want := i < pre; m != want {
			t.Fatalf("step %d: pretraining %v, want %v", i+1, m, want)
		}
	}
	for e, h := range res.History {
		if h.Pretrain != (e < 2) {
			t.Errorf("history[%d].Pretrain = %v", e, h.Pretrain)
		}
	}
	for e, st := range states {
		want := st.Steps
		if e+1 > 2 {
			want = st.Steps - pre // restarted at epoch 3
		}
		if st.Optimizer.Steps != want {
			t.Errorf("after epoch %d: optimizer steps %d, want %d", e+1, st.Optimizer.Steps, want)
		}
	}
	if q.pretrain {
		t.Error("the model is left in pretraining mode")
	}
	// The pretraining optimum is x+2: after epoch 2 w[1] (data 1) is near 3, at the end near 1.
	if w := states[1].Params[0][1]; w < 2 {
		t.Errorf("after pretraining w = %v, want near 3", states[1].Params[0])
	}
	if w := q.w[1]; w > 2 {
		t.Errorf("after training w = %v, want near 1", q.w)
	}
	// A model without a pretraining loss is refused.
	_, err = Fit(context.Background(), struct{ Model }{q}, opt, s, batch, labels, 2, Options{Epochs: 3, LR: 0.1, PretrainEpochs: 1}, Hooks{})
	if err == nil || !strings.Contains(err.Error(), "does not implement train.Pretrainer") {
		t.Fatalf("model without pretraining: %v", err)
	}
}

// recording is an optimizer that keeps a copy of the parameters after every step.
type recording struct {
	Optimizer
	after [][]float64
}

func (r *recording) Step(params []Tensor, lr float64) {
	r.Optimizer.Step(params, lr)
	r.after = append(r.after, append([]float64(nil), params[0].Value...))
}

// TestFitEMA: with Options.EMA the optimizer's path is the same as without it, validation and
// the Best hook see the moving average computed by hand from that path, and Fit returns the
// average of the best epoch.
func TestFitEMA(t *testing.T) {
	labels, feats := toyData()
	batch := func(idx []int, dst []float32, rng *rand.Rand) {
		for i, k := range idx {
			copy(dst[i*2:], feats[k*2:k*2+2])
			dst[i*2] += float32(rng.NormFloat64())
		}
	}
	const decay = 0.9
	fit := func(ema float64) (*quadratic, *recording, map[int][]float64, Result) {
		s, _, _ := NewClassSampler(labels, 2, 3, nil)
		q := &quadratic{w: []float64{5, 5}, g: make([]float64, 2)}
		opt, _ := NewOptimizer(OptAdam, 0)
		rec := &recording{Optimizer: opt}
		seen := map[int][]float64{}
		scores := []float64{0, 1, 2, 5, 4, 3, 2} // epoch 3 is the best
		res, err := Fit(context.Background(), q, rec, s, batch, labels, 2, Options{Epochs: 6, LR: 0.3, Seed: 3, EMA: ema},
			Hooks{Validate: func(e int) (float64, error) { seen[e] = append([]float64(nil), q.w...); return scores[e], nil }})
		if err != nil {
			t.Fatal(err)
		}
		return q, rec, seen, res
	}
	_, plain, _, _ := fit(0)
	q, rec, seen, res := fit(decay)
	if !reflect.DeepEqual(rec.after, plain.after) {
		t.Fatal("the moving average changed the optimizer's path")
	}
	avg := []float64{5, 5}
	ends := map[int]int{} // step count -> the epoch it ends
	for e, n := 1, 0; e < len(res.History); e++ {
		n += res.History[e].Steps
		ends[n] = e
	}
	checked := 0
	for i, w := range rec.after {
		d := min(decay, float64(1+i)/float64(10+i))
		for j := range avg {
			avg[j] = d*avg[j] + (1-d)*w[j]
		}
		e, ok := ends[i+1]
		if !ok {
			continue
		}
		checked++
		for j := range avg {
			if math.Abs(seen[e][j]-avg[j]) > 1e-12 {
				t.Fatalf("epoch %d validated %v, want the average %v", e, seen[e], avg)
			}
		}
		if reflect.DeepEqual(seen[e], w) {
			t.Fatalf("epoch %d validated the raw parameters %v", e, w)
		}
	}
	if checked != 6 {
		t.Fatalf("checked %d epochs of 6", checked)
	}
	if res.BestEpoch != 3 || !reflect.DeepEqual(q.w, seen[3]) {
		t.Fatalf("best epoch %d, final %v, want epoch 3's average %v", res.BestEpoch, q.w, seen[3])
	}
}
