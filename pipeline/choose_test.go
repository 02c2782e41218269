package pipeline

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

// TestChooseExport: the raw features are exported when the trained model's best validation
// MAP@R does not beat theirs, unless keep_trained; without validation classes nothing is
// compared, and each case says so.
func TestChooseExport(t *testing.T) {
	ds := memDataset(4, 4, 4, 4, 4, 4)
	split, err := splitClasses(ds, 4, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	// 2-d raw features: class c at angle c (well apart), so the raw MAP@R of the validation
	// classes is 1; the flipped copies are the same.
	d := 2
	feats := make([]float32, len(ds.Items)*d)
	for i, it := range ds.Items {
		feats[i*d], feats[i*d+1] = float32(it.Label+1), float32(10-it.Label)
	}
	cases := []struct {
		name    string
		val     bool
		best    float64
		keep    bool
		raw     bool
		compare bool
		message string
	}{
		{"trained better", true, 1.5, false, false, true, "beats the raw features"},
		{"trained worse", true, 0.5, false, true, true, "model.onnx embeds the raw features; --keep-trained"},
		{"tie goes to the raw features", true, 1, false, true, true, "did not beat"},
		{"trained worse, keep_trained", true, 0.5, true, false, true, "exported anyway (keep_trained)"},
		{"no validation classes", false, 0.5, false, false, false, "without comparison"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.KeepTrained = tc.keep
			s := split
			if !tc.val {
				s.val, s.valIdx = nil, nil
			}
			r := &runner{cfg: cfg, ds: ds, split: s, sum: &Summary{}, env: RunEnv{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
			r.sum.Training.BestScore = tc.best
			raw, err := r.chooseExport(feats, feats, d)
			if err != nil {
				t.Fatal(err)
			}
			c := r.sum.Choice
			if raw != tc.raw || c.Compared != tc.compare || (c.Source == sourceRaw) != tc.raw || !strings.Contains(c.Message, tc.message) {
				t.Fatalf("raw %v, choice %+v; want raw %v, compared %v, message with %q", raw, c, tc.raw, tc.compare, tc.message)
			}
			if tc.compare && (c.Raw != 1 || c.Trained != tc.best || !strings.Contains(c.Metric, "map_at_r over the 8 images of the 2 validation classes")) {
				t.Errorf("scores %+v", c)
			}
			if warned := strings.Contains(strings.Join(r.sum.Warnings, "\n"), c.Message); warned == (tc.compare && tc.best > 1) {
				t.Errorf("warnings %q (a choice other than a better trained model is a warning)", r.sum.Warnings)
			}
		})
	}
}
