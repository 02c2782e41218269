package train

import (
	"context"
	"errors"
	"math"
	"math/rand"
	"testing"
)

// quadratic is a toy model: loss = mean over the batch of ||w - x_i||^2 / 2.
type quadratic struct {
	w, g  []float64
	nanAt int
	steps int
}

func (q *quadratic) Tensors() []Tensor { return []Tensor{{Name: "w", Value: q.w, Grad: q.g}} }

func (q *quadratic) Step(x []float32, n int, labels []int, anchors []bool) (float64, error) {
	q.steps++
	if q.steps == q.nanAt {
		return math.NaN(), nil
	}
	d := len(q.w)
	clear(q.g)
	var loss float64
	for i := 0; i < n; i++ {
		for j := 0; j < d; j++ {
			r := q.w[j] - float64(x[i*d+j])
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
