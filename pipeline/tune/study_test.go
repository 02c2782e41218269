package tune

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// curves are the fake trials' validation scores after epochs 1..10 (epoch 0 scores 0), by trial
// index; a nil curve is a trial that scores 0.9 and whose loss turns NaN at epoch 3.
var curves = map[int]func(e int) float64{
	0: func(e int) float64 { return 0.50 + 0.01*float64(e) },
	1: func(e int) float64 { return 0.55 + 0.01*float64(e) },
	2: func(e int) float64 { return 0.10 + 0.01*float64(e) }, // poor from the start
	3: nil,
	4: func(e int) float64 { return 0.20 + 0.001*float64(e) }, // poor
	5: func(e int) float64 { return 0.60 + 0.01*float64(e) },  // the best
}

// fake trains trial t for 10 epochs along curves[t.Index], counting the epochs it trained.
func fake(trained map[int]int, cancelAt int, cancel context.CancelFunc) Objective {
	return func(ctx context.Context, t *Trial, report func([]float64) error) error {
		scores := []float64{0}
		for e := 1; e <= 10; e++ {
			if t.Index == cancelAt && e == 2 {
				cancel()
				return ctx.Err()
			}
			trained[t.Index]++
			c := curves[t.Index]
			if c == nil {
				if e == 3 {
					return fmt.Errorf("train: %w: loss is NaN at epoch 3", ErrNonFinite)
				}
				c = func(int) float64 { return 0.9 }
			}
			scores = append(scores, c(e))
			if err := report(scores); err != nil {
				return fmt.Errorf("pipeline: %w", err)
			}
		}
		return nil
	}
}

func settings(t *testing.T, n int) Settings {
	t.Helper()
	raw := []byte("optimizer.args.lr: loguniform(1e-5, 1e-3)\nloss.args.temperature: [8, 16]\n")
	sp, err := ParseSpace(raw, "space.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return Settings{Space: sp, SpaceRaw: raw, ConfigPath: "base.yaml", ConfigRaw: []byte("loss: {name: group}\n"),
		Trials: n, Seed: 1, Halving: Halving{Eta: 2, MinEpochs: 2}, Metric: "map_at_r",
		BestConfig: func(p map[string]any) ([]byte, error) {
			return Apply([]byte("loss: {name: group}\n"), []string{"loss.args.temperature"}, p, "best")
		}}
}

// TestStudy: successive halving stops the poor trials at the first rung (epoch 2) after the
// first trials set the bar, a NaN trial is recorded and skipped, the best completed trial's
// config is written, and a progress line is printed per trial.
func TestStudy(t *testing.T) {
	out := t.TempDir()
	trained := map[int]int{}
	var progress bytes.Buffer
	st, err := Run(context.Background(), settings(t, 6), out, fake(trained, -1, nil), &progress)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus := []string{StatusOK, StatusOK, StatusPruned, StatusNaN, StatusPruned, StatusOK}
	wantTrained := []int{10, 10, 2, 3, 2, 10}
	for i, tr := range st.Trials {
		if tr.Status != wantStatus[i] || trained[i] != wantTrained[i] {
			t.Errorf("trial %d: status %s after %d epochs, want %s after %d (%s)", i, tr.Status, trained[i], wantStatus[i], wantTrained[i], tr.Error)
		}
	}
	if nan := st.Trials[3]; !strings.Contains(nan.Error, "NaN") || nan.Epochs() != 2 {
		t.Errorf("NaN trial recorded as %+v", nan)
	}
	if st.Best != 5 || st.Trials[5].BestEpoch != 10 || st.Trials[5].Score != curves[5](10) {
		t.Errorf("best %d %+v, want trial 6 at epoch 10", st.Best, st.Trials[st.Best])
	}
	if lines := strings.Split(strings.TrimSpace(progress.String()), "\n"); len(lines) != 6 || !strings.HasPrefix(lines[3], "trial 4/6 nan") {
		t.Errorf("progress:\n%s", progress.String())
	}
	best, err := os.ReadFile(filepath.Join(out, BestFile))
	if err != nil || !strings.Contains(string(best), fmt.Sprintf("temperature: %v", st.Trials[5].Params["loss.args.temperature"])) {
		t.Errorf("best.yaml: %v\n%s", err, best)
	}
	md, err := os.ReadFile(filepath.Join(out, ReportFile))
	if err != nil || !strings.Contains(string(md), "| 1 | 6 | ok | 0.7000 | 10 | 10 |") {
		t.Errorf("tune.md: %v\n%s", err, md)
	}
	var onDisk Study
	raw, _ := os.ReadFile(filepath.Join(out, StudyFile))
	if err := json.Unmarshal(raw, &onDisk); err != nil || len(onDisk.Trials) != 6 || onDisk.Best != 5 {
		t.Errorf("tune.json: %v, %d trials, best %d", err, len(onDisk.Trials), onDisk.Best)
	}
}

// TestStudyResume: an interrupted study keeps its completed trials; run again, it continues with
// the interrupted one, the same points, and a larger --trials extends it. Another space is refused.
func TestStudyResume(t *testing.T) {
	out := t.TempDir()
	trained := map[int]int{}
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Run(ctx, settings(t, 6), out, fake(trained, 2, cancel), &bytes.Buffer{})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "trial 3 interrupted") {
		t.Fatalf("interrupted study: %v", err)
	}
	first, _ := os.ReadFile(filepath.Join(out, StudyFile))
	var st Study
	if err := json.Unmarshal(first, &st); err != nil || len(st.Trials) != 2 {
		t.Fatalf("after the interruption tune.json holds %d trials (%v), want 2", len(st.Trials), err)
	}
	again := map[int]int{}
	res, err := Run(context.Background(), settings(t, 4), out, fake(again, -1, nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Trials) != 4 || again[0] != 0 || again[1] != 0 || again[2] != 2 || again[3] != 3 {
		t.Fatalf("resumed: %d trials, epochs trained per trial %v; want trials 3 and 4 only", len(res.Trials), again)
	}
	fresh := map[int]int{}
	full, err := Run(context.Background(), settings(t, 4), t.TempDir(), fake(fresh, -1, nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range full.Trials {
		a, b := full.Trials[i], res.Trials[i]
		if fmt.Sprint(a.Params) != fmt.Sprint(b.Params) || a.Status != b.Status || a.Score != b.Score {
			t.Errorf("trial %d resumed %+v, uninterrupted %+v", i, b, a)
		}
	}
	s := settings(t, 5)
	s.SpaceRaw = append(s.SpaceRaw, "# changed\n"...)
	if _, err := Run(context.Background(), s, out, fake(map[int]int{}, -1, nil), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "another space") {
		t.Errorf("another space: %v", err)
	}
}

// TestStudyBaseTrial: with BaseTrial, trial 1 is the base config with only the space's
// single-valued keys set, the next trials take the quasi-random points from the first on, the
// report marks the base's values, and a study made one way is not continued the other way.
func TestStudyBaseTrial(t *testing.T) {
	s := settings(t, 3)
	raw := []byte("loss.name: [triplet]\noptimizer.args.lr: loguniform(1e-5, 1e-3)\n")
	sp, err := ParseSpace(raw, "space.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.Space, s.SpaceRaw, s.BaseTrial = sp, raw, true
	out := t.TempDir()
	var progress bytes.Buffer
	st, err := Run(context.Background(), s, out, fake(map[int]int{}, -1, nil), &progress)
	if err != nil {
		t.Fatal(err)
	}
	base := st.Trials[0]
	if !base.Base || len(base.Params) != 1 || base.Params["loss.name"] != "triplet" {
		t.Errorf("trial 1: base %v, params %v; want the base with loss.name triplet only", base.Base, base.Params)
	}
	points := sp.Points(3, s.Seed)
	for i, tr := range st.Trials[1:] {
		if tr.Base || tr.Params["optimizer.args.lr"] != points[i][1] || tr.Params["loss.name"] != "triplet" {
			t.Errorf("trial %d: base %v, params %v; want quasi-random point %d %v", i+2, tr.Base, tr.Params, i+1, points[i])
		}
	}
	if !strings.Contains(progress.String(), "trial 1/3 ok      score 0.6000 epochs 10") || !strings.Contains(progress.String(), "the base config name=triplet\n") {
		t.Errorf("progress:\n%s", progress.String())
	}
	md, _ := os.ReadFile(filepath.Join(out, ReportFile))
	if !strings.Contains(string(md), "| triplet | (base) |") || !strings.Contains(string(md), "Trial 1 is the base config") {
		t.Errorf("tune.md:\n%s", md)
	}
	s.BaseTrial, s.Trials = false, 4
	if _, err := Run(context.Background(), s, out, fake(map[int]int{}, -1, nil), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--base-trial=true") {
		t.Errorf("continued without the base trial: %v", err)
	}
}
