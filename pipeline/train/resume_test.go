package train

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

// resumeSetup returns a fresh toy model, optimizer, sampler and augmenting batch function (the
// rng decides a random jitter per sample, so that a resumed epoch must replay the same draws).
func resumeSetup(t *testing.T, w0 float64) (*quadratic, Optimizer, Sampler, Batch, []int) {
	t.Helper()
	labels, feats := toyData()
	s, _, err := NewClassSampler(labels, 2, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	opt, err := NewOptimizer(OptRAdam, 1e-3)
	if err != nil {
		t.Fatal(err)
	}
	batch := func(idx []int, dst []float32, rng *rand.Rand) {
		for i, k := range idx {
			copy(dst[i*2:], feats[k*2:k*2+2])
			dst[i*2] += float32(rng.NormFloat64()) * 0.1
		}
	}
	return &quadratic{w: []float64{w0, w0}, g: make([]float64, 2)}, opt, s, batch, labels
}

// TestFitResumeEqualsUninterrupted: a Fit stopped after epoch k and resumed from the State its
// Checkpoint hook saw (round-tripped through gob, as in a checkpoint file) ends with the same
// parameters, history, best epoch and optimizer steps as an uninterrupted Fit, for every k,
// with and without validation-based selection, LR steps, early stopping, and with pretraining
// epochs and reloads of the best parameters (resuming after the switch, after the epoch before
// it, and after a reload), and with a moving average of the parameters (Options.EMA).
func TestFitResumeEqualsUninterrupted(t *testing.T) {
	const epochs = 7
	scoreOf := func(q *quadratic) func(int) (float64, error) {
		// Improves, then gets worse: the best epoch is in the middle.
		return func(e int) (float64, error) { return -((q.w[0]-1.5)*(q.w[0]-1.5) + (q.w[1]-1)*(q.w[1]-1)), nil }
	}
	type schedule struct {
		pretrain int
		reload   []int
		ema      float64
	}
	for _, validate := range []bool{false, true} {
		for _, patience := range []int{0, 2} {
			for _, sch := range []schedule{{}, {pretrain: 2, reload: []int{3, 5}}, {ema: 0.9}, {pretrain: 2, reload: []int{3, 5}, ema: 0.8}} {
				o := Options{Epochs: epochs, LR: 0.3, LRSteps: []int{3, 5}, LRGamma: 0.5, Seed: 42, AnchorsPerClass: 1, Patience: patience,
					PretrainEpochs: sch.pretrain, ReloadBestAfter: sch.reload, EMA: sch.ema}
				q, opt, s, batch, labels := resumeSetup(t, 5)
				var states []State
				h := Hooks{Checkpoint: func(st State) error { states = append(states, st); return nil }}
				if validate {
					h.Validate = scoreOf(q)
				}
				want, err := Fit(context.Background(), q, opt, s, batch, labels, 2, o, h)
				if err != nil {
					t.Fatal(err)
				}
				wantW := append([]float64(nil), q.w...)
				for k, st := range states {
					var buf bytes.Buffer
					if err := gob.NewEncoder(&buf).Encode(st); err != nil {
						t.Fatal(err)
					}
					var saved State
					if err := gob.NewDecoder(&buf).Decode(&saved); err != nil {
						t.Fatal(err)
					}
					q2, opt2, s2, batch2, _ := resumeSetup(t, -9) // different start: the state must win
					o2 := o
					o2.Resume = &saved
					h2 := Hooks{}
					if validate {
						h2.Validate = scoreOf(q2)
					}
					got, err := Fit(context.Background(), q2, opt2, s2, batch2, labels, 2, o2, h2)
					if err != nil {
						t.Fatalf("resume after epoch %d: %v", k+1, err)
					}
					if !reflect.DeepEqual(q2.w, wantW) {
						t.Errorf("validate=%v patience=%d %+v resumed after epoch %d: weights %v, uninterrupted %v", validate, patience, sch, k+1, q2.w, wantW)
					}
					if got.BestEpoch != want.BestEpoch || got.BestScore != want.BestScore || got.Epochs != want.Epochs ||
						got.Steps != want.Steps || !reflect.DeepEqual(opt2.State(), opt.State()) {
						t.Errorf("validate=%v patience=%d %+v resumed after epoch %d: result %+v, uninterrupted %+v", validate, patience, sch, k+1, got, want)
					}
					if len(got.History) != len(want.History) {
						t.Fatalf("history lengths %d vs %d", len(got.History), len(want.History))
					}
					for i := range got.History {
						a, b := got.History[i], want.History[i]
						a.Seconds, b.Seconds = 0, 0
						if a != b {
							t.Errorf("resumed after epoch %d: history[%d] %+v, uninterrupted %+v", k+1, i, a, b)
						}
					}
				}
				if patience == 0 && len(states) != epochs {
					t.Fatalf("Checkpoint called %d times for %d epochs", len(states), epochs)
				}
			}
		}
	}
}

func TestFitResumeRefusesMismatchedState(t *testing.T) {
	q, opt, s, batch, labels := resumeSetup(t, 5)
	st := &State{Epoch: 2, Params: [][]float64{{1, 2, 3}}, Best: [][]float64{{1, 2, 3}}}
	_, err := Fit(context.Background(), q, opt, s, batch, labels, 2, Options{Epochs: 3, LR: 0.1, Resume: st}, Hooks{})
	if err == nil || !strings.Contains(err.Error(), `parameter "w" has 2 values, the state 3`) {
		t.Fatalf("error %v", err)
	}
	// A Checkpoint hook error stops training.
	boom := errors.New("disk full")
	_, err = Fit(context.Background(), q, opt, s, batch, labels, 2, Options{Epochs: 3, LR: 0.1},
		Hooks{Checkpoint: func(State) error { return boom }})
	if !errors.Is(err, boom) {
		t.Fatalf("hook error: %v", err)
	}
}
