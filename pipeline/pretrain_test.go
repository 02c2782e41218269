package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/pipeline/train"
)

var (
	_ train.Pretrainer = (*headModel)(nil)
	_ train.Pretrainer = (*tailModel)(nil)
)

// TestPretrainingLoss: with pretraining on, the head's and the tail's Step train with the softmax
// cross-entropy of the classifier (the same loss and gradients as head.StepLoss with LossSoftmax
// on the same features), and with it off with the configured Group Loss again.
func TestPretrainingLoss(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	h, err := head.New(head.Config{In: 6, Emb: 4, Classes: 3, DType: head.Float64}, rng)
	if err != nil {
		t.Fatal(err)
	}
	group := head.LossConfig{Kind: head.LossGroup, Group: head.GroupLoss{Temperature: 3, Iterations: 1, Scaling: 1, AnchorsPerClass: 1}}
	hm := &headModel{h: h, normalize: true, loss: group}
	g := tinyTail(t, rng)
	tm := &tailModel{headModel: hm, tail: g, params: g.Params(), inDim: 12, featDim: 6}
	const n = 9
	labels := []int{0, 0, 0, 1, 1, 1, 2, 2, 2}
	anchors := train.Anchors(labels, 1)
	x := make([]float32, n*12)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	feats, err := g.Infer([][]float32{x}, n) // the tail's output: the head's input
	if err != nil {
		t.Fatal(err)
	}
	hm.transform(feats, n)
	want := func(l head.LossConfig) (float64, []float64) {
		res, err := h.StepLoss(feats, n, labels, anchors, l)
		if err != nil {
			t.Fatal(err)
		}
		return res.Loss, append([]float64(nil), h.Params()[0].Grad...)
	}
	ce, ceGrad := want(head.DefaultLossConfig(head.LossSoftmax))
	gl, _ := want(group)
	if math.Abs(ce-gl) < 1e-3 {
		t.Fatalf("the softmax (%g) and group (%g) losses do not differ: the test cannot tell them apart", ce, gl)
	}
	// The tail model runs its whole graph in the head's dtype (float64 here), the reference
	// features come from the float32 Infer: the two agree to about 1e-8 relative.
	for _, tc := range []struct {
		name string
		m    train.Pretrainer
		x    []float32
		tol  float64
	}{{"head", hm, feats, 1e-12}, {"tail", tm, x, 1e-6}} {
		for _, on := range []bool{true, false} {
			tc.m.SetPretraining(on)
			loss, err := tc.m.Step(tc.x, n, labels, anchors)
			if err != nil {
				t.Fatal(err)
			}
			w := gl
			if on {
				w = ce
				got := h.Params()[0].Grad
				for i := range got {
					if math.Abs(got[i]-ceGrad[i]) > tc.tol*math.Max(1, math.Abs(ceGrad[i])) {
						t.Errorf("%s pretraining: gradient of %q [%d] is %.12g, the softmax loss's %.12g", tc.name, h.Params()[0].Name, i, got[i], ceGrad[i])
						break
					}
				}
			}
			if math.Abs(loss-w) > tc.tol*math.Abs(w) {
				t.Errorf("%s pretraining %v: loss %.12g, want %.12g", tc.name, on, loss, w)
			}
		}
	}
}

// cancelAtEpoch is a slog handler that cancels a run after its training logs the given epoch.
type cancelAtEpoch struct {
	slog.Handler
	epoch  int64
	cancel context.CancelFunc
}

func (h cancelAtEpoch) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "epoch" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "epoch" && a.Value.Int64() == h.epoch {
				h.cancel()
			}
			return true
		})
	}
	return nil
}

func (h cancelAtEpoch) Enabled(context.Context, slog.Level) bool { return true }

// TestRunPretrainReloadResume runs the tiny CNN with 2 pretraining epochs and reloads of the best
// parameters after epochs 3 and 5: metrics.json marks those epochs, and runs interrupted after
// epoch 2 (the last pretraining one) and after epoch 3 (a reload), then resumed, end with the
// same history, metrics and exported model as the uninterrupted run.
func TestRunPretrainReloadResume(t *testing.T) {
	needORT(t)
	cfg := tinyConfig(t)
	cfg.Data = colorDataset(t, 40, 8) // 20 training classes: 4 for validation, 16 trained
	cfg.ValidationClasses = 4
	cfg.Head.Init, cfg.Head.ClassifierInit = "random", "random" // so that training improves on epoch 0
	cfg.Optimizer.Epochs = 6
	cfg.Optimizer.LR = 3e-2
	cfg.Optimizer.LRSteps = []int{3}
	cfg.Optimizer.ReloadBestAfter = []int{3, 5}
	cfg.Loss.PretrainEpochs = 2
	want, err := Run(context.Background(), cfg, RunEnv{})
	if err != nil {
		t.Fatal(err)
	}
	h := want.Training.History
	for _, st := range h {
		t.Logf("epoch %d loss %.4f validation %.4f lr %g pretrain %v reload %v", st.Epoch, st.Loss, st.Score, st.LR, st.Pretrain, st.ReloadBest)
	}
	if len(h) != 7 || want.Training.BestEpoch < 3 {
		t.Fatalf("%d history entries, best epoch %d; want 7 and a trained best epoch (else the model would not depend on training)", len(h), want.Training.BestEpoch)
	}
	for _, st := range h {
		if st.Pretrain != (st.Epoch == 1 || st.Epoch == 2) || st.ReloadBest != (st.Epoch == 3 || st.Epoch == 5) {
			t.Errorf("epoch %d: pretrain %v reload_best %v", st.Epoch, st.Pretrain, st.ReloadBest)
		}
	}
	raw, err := os.ReadFile(filepath.Join(cfg.Out, "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Training struct {
			History []map[string]any `json:"history"`
		} `json:"training"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc.Training.History) != 7 {
		t.Fatalf("metrics.json: %v, %d epochs", err, len(doc.Training.History))
	}
	if doc.Training.History[1]["pretrain"] != true || doc.Training.History[3]["pretrain"] != nil || doc.Training.History[3]["reload_best"] != true {
		t.Errorf("metrics.json history: %v", doc.Training.History)
	}
	model, err := os.ReadFile(filepath.Join(cfg.Out, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	for _, stop := range []int64{2, 3} {
		c := cfg
		c.Out = filepath.Join(t.TempDir(), "run")
		ctx, cancel := context.WithCancel(context.Background())
		_, err := Run(ctx, c, RunEnv{Log: slog.New(cancelAtEpoch{Handler: slog.DiscardHandler, epoch: stop, cancel: cancel})})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("stopped after epoch %d: %v", stop, err)
		}
		got, err := Resume(context.Background(), c.Out, RunEnv{})
		if err != nil {
			t.Fatalf("resume after epoch %d: %v", stop, err)
		}
		if got.Training.ResumedFromEpoch != int(stop) {
			t.Errorf("resumed from epoch %d, want %d", got.Training.ResumedFromEpoch, stop)
		}
		for i := range h {
			a, b := got.Training.History[i], h[i]
			a.Seconds, b.Seconds = 0, 0
			if a != b {
				t.Errorf("resumed after epoch %d: history[%d] %+v, uninterrupted %+v", stop, i, a, b)
			}
		}
		if !reflect.DeepEqual(got.Trained, want.Trained) || got.Training.BestEpoch != want.Training.BestEpoch {
			t.Errorf("resumed after epoch %d: trained %+v best epoch %d, uninterrupted %+v %d", stop,
				got.Trained, got.Training.BestEpoch, want.Trained, want.Training.BestEpoch)
		}
		if m, err := os.ReadFile(filepath.Join(c.Out, "model.onnx")); err != nil || !bytes.Equal(m, model) {
			t.Errorf("resumed after epoch %d: model.onnx differs from the uninterrupted run's (%v)", stop, err)
		}
	}
}
