package pipeline

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/export"
)

// TestDecideExport: the rule's boundaries, and the numbers measured on Fashion-MNIST (2
// validation classes: raw features) and on CUB-100 (10 validation classes, the default's 3 seeds:
// the trained model).
func TestDecideExport(t *testing.T) {
	better := exportEvidence{classes: minCompareClasses, trainedMAP: 0.70, rawMAP: 0.60, trainedNMI: 0.80, rawNMI: 0.75, worstLead: 0.05}
	with := func(f func(e *exportEvidence)) exportEvidence { e := better; f(&e); return e }
	cases := []struct {
		name   string
		e      exportEvidence
		raw    bool
		reason string
		msg    string
	}{
		{"trained better, the fewest classes", better, false, reasonBetter, "beats the raw features on the 5 validation classes"},
		{"one class fewer", with(func(e *exportEvidence) { e.classes = minCompareClasses - 1 }), true, reasonFewClasses,
			"only 4 validation classes (fewer than 5)"},
		{"no validation classes", exportEvidence{}, true, reasonNoVal, "no validation classes"},
		{"MAP@R tied", with(func(e *exportEvidence) { e.trainedMAP = e.rawMAP }), true, reasonScore, "did not beat"},
		{"MAP@R lower", with(func(e *exportEvidence) { e.trainedMAP = e.rawMAP - 0.01 }), true, reasonScore, "did not beat"},
		// Validation NMI is reported, not a test (see decideExport).
		{"NMI lower", with(func(e *exportEvidence) { e.trainedNMI = e.rawNMI - 0.01 }), false, reasonBetter, "NMI 74.00 vs 75.00"},
		{"lead gone without one class", with(func(e *exportEvidence) { e.worstLead, e.worstClass = 0, "bag" }), true, reasonOneClass,
			`without class "bag" its MAP@R leads the raw features' by 0.00 points`},
		{"lead smallest without one class, still ahead", with(func(e *exportEvidence) { e.worstLead = 1e-4 }), false, reasonBetter, "also with any one left out"},
		// Fashion-MNIST, classes 0-4 trained (3 fit, 2 validation), 5-9 evaluated: the validation
		// classes preferred the trained model, which lost 0.6 R@1 / 1.6 NMI on the evaluated ones.
		{"Fashion-MNIST", exportEvidence{classes: 2, trainedMAP: 0.6737, rawMAP: 0.6530, trainedNMI: 0.7816, rawNMI: 0.7751, bestEpoch: 3}, true, reasonFewClasses,
			"validation MAP@R 67.37 trained (epoch 3) vs 65.30 raw, NMI 78.16 vs 77.51"},
	}
	// CUB-100, the default config's 3 seeds (runs on an AVX2-only CPU; validation classes scored
	// with each run's model.onnx and the flip-averaged raw features): MAP@R, NMI and the worst
	// leave-one-out lead. The trained models led by 4-6 NMI points on the evaluated classes;
	// validation NMI preferred the raw features on seeds 2 and 3.
	for _, m := range [][5]float64{{0.7583, 0.6796, 0.9314, 0.9104, 0.0622}, {0.7663, 0.6427, 0.9548, 0.9644, 0.1087}, {0.6610, 0.5528, 0.9078, 0.9187, 0.0970}} {
		e := exportEvidence{classes: 10, trainedMAP: m[0], rawMAP: m[1], trainedNMI: m[2], rawNMI: m[3], worstLead: m[4]}
		cases = append(cases, struct {
			name   string
			e      exportEvidence
			raw    bool
			reason string
			msg    string
		}{"CUB-100", e, false, reasonBetter, "beats the raw features on the 10 validation classes"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw, reason, msg := decideExport(tc.e, false)
			if raw != tc.raw || reason != tc.reason || !strings.Contains(msg, tc.msg) {
				t.Fatalf("raw %v, reason %q, %q; want raw %v, reason %q, a message with %q", raw, reason, msg, tc.raw, tc.reason, tc.msg)
			}
			if raw != strings.Contains(msg, "--keep-trained exports the trained model") {
				t.Errorf("message %q does not say how to keep the trained model", msg)
			}
			// keep_trained keeps the trained model, and still says why it would not have been.
			raw, reason, msg = decideExport(tc.e, true)
			if raw || tc.raw != (reason == reasonKeepTrained) || tc.raw && !strings.Contains(msg, tc.msg) {
				t.Errorf("keep_trained: raw %v, reason %q, %q", raw, reason, msg)
			}
		})
	}
}

// embedRows maps n rows of raw features to their embeddings (and the embedding size).
type embedRows func(x []float32, n int) ([]float32, int, error)

// rowsModel is a trained model for chooseExport: f applied to the raw features of the items.
type rowsModel struct {
	feats []float32
	d     int
	f     embedRows
}

func (m rowsModel) dim() int { return m.d }
func (m rowsModel) embedItems(items []int) ([]float32, error) {
	out, _, err := m.f(rowops.Gather(m.feats, m.d, items), len(items))
	return out, err
}
func (m rowsModel) embedImages([]float32, int) ([]float32, error) {
	return nil, fmt.Errorf("rowsModel: no images")
}
func (m rowsModel) layers() ([]export.Layer, error) { return nil, nil }
func (m rowsModel) source() featureSource           { return nil }

// TestChooseExport: chooseExport scores the trained model (an embedding function) and the raw
// features on the validation classes and records the choice: noisy raw features against a
// trained model that removes the noise, the identity (a tie) and too few validation classes.
func TestChooseExport(t *testing.T) {
	ds := memDataset(10, 10, 10, 10, 10, 10, 10, 10, 10, 10)
	const d = 10
	rng := rand.New(rand.NewSource(1))
	// Raw features: class c is the unit vector e_c plus noise large enough to mix the classes.
	feats := make([]float32, len(ds.Items)*d)
	for i, it := range ds.Items {
		for j := 0; j < d; j++ {
			feats[i*d+j] = float32(0.45 * rng.NormFloat64())
		}
		feats[i*d+it.Label]++
	}
	// A trained model that removes most of the noise: its images sit near their class's axis.
	denoise := func(x []float32, n int) ([]float32, int, error) {
		out := make([]float32, len(x))
		for i := 0; i < n; i++ {
			best := 0
			for j := 1; j < d; j++ {
				if x[i*d+j] > x[i*d+best] {
					best = j
				}
			}
			for j := 0; j < d; j++ {
				out[i*d+j] = 0.05 * x[i*d+j]
			}
			out[i*d+best]++
		}
		return out, d, nil
	}
	identity := func(x []float32, n int) ([]float32, int, error) { return append([]float32(nil), x...), d, nil }
	cases := []struct {
		name    string
		val     int
		embed   embedRows
		keep    bool
		raw     bool
		reason  string
		compare bool
	}{
		{"trained better on 5 validation classes", 5, denoise, false, false, reasonBetter, true},
		{"the identity ties", 5, identity, false, true, reasonScore, true},
		{"the identity, keep_trained", 5, identity, true, false, reasonKeepTrained, true},
		{"trained better on 4 validation classes", 4, denoise, false, true, reasonFewClasses, true},
		{"no validation classes, adapted to the data", 0, denoise, false, true, reasonNoVal, false},
		{"validation_classes 0 set by the user", 0, denoise, false, false, reasonValOff, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			split, err := splitClasses(ds, 8, tc.val, 1)
			if err != nil {
				t.Fatal(err)
			}
			cfg := config.DefaultConfig()
			cfg.KeepTrained = tc.keep
			if tc.reason == reasonNoVal {
				cfg.Adapted = []config.Adaptation{{Key: keyValClasses, From: "10", To: "0"}}
			}
			r := &runner{cfg: cfg, ds: ds, split: split, sum: &Summary{}, env: RunEnv{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
			raw, err := r.chooseExport(rawModel{src: frozenFeatures{feats: feats, flips: feats, d: d}, flipTTA: true}, rowsModel{feats: feats, d: d, f: tc.embed})
			if err != nil {
				t.Fatal(err)
			}
			c := r.sum.Choice
			if raw != tc.raw || c.Reason != tc.reason || c.Compared != tc.compare || (c.Source == sourceRaw) != tc.raw || c.ValidationClasses != tc.val {
				t.Fatalf("raw %v, choice %+v; want raw %v, reason %q, compared %v", raw, c, tc.raw, tc.reason, tc.compare)
			}
			warnings := strings.Join(r.sum.Warnings, "\n")
			if warned := strings.Contains(warnings, c.Message); warned == (c.Reason == reasonBetter) {
				t.Errorf("warnings %q (every choice but a better trained model is a warning)", r.sum.Warnings)
			}
			if raw != strings.Contains(warnings, "model.onnx embeds the raw features: "+c.Message) {
				t.Errorf("warnings %q do not say what model.onnx embeds", r.sum.Warnings)
			}
			if !tc.compare {
				return
			}
			// The raw features are imperfect (else nothing could beat them), the scores are the
			// validation images', and the leave-one-out lead is at most the lead on all classes.
			if c.Raw <= 0.3 || c.Raw >= 0.95 || c.RawNMI <= 0 || c.RawNMI >= 0.95 {
				t.Fatalf("raw validation MAP@R %.3f, NMI %.3f: the test's noise no longer mixes the classes", c.Raw, c.RawNMI)
			}
			if want := fmt.Sprintf("over the %d images of the %d validation classes", 10*tc.val, tc.val); !strings.Contains(c.Metric, want) {
				t.Errorf("metric %q, want %q", c.Metric, want)
			}
			lead := c.Trained - c.Raw
			if tc.embed != nil && tc.reason == reasonScore && (lead != 0 || c.TrainedNMI != c.RawNMI) {
				t.Errorf("the identity scores %v / %v, the raw features %v / %v", c.Trained, c.TrainedNMI, c.Raw, c.RawNMI)
			}
			if tc.reason == reasonBetter && (lead < 0.1 || c.TrainedNMI <= c.RawNMI || c.WorstLeaveOneOut <= 0 || c.WorstLeaveOneOut > lead+1e-9 || c.LeftOut == "") {
				t.Errorf("trained %+v", c)
			}
		})
	}
}
