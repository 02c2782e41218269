package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/pipeline/config"
)

// TestCompareTiny: 2 seeds x (5 single-head losses + a 2-head ensemble) on the tiny CNN; the
// table has every row with mean ± std, compare.json every run; a second call reuses every run.
func TestCompareTiny(t *testing.T) {
	needORT(t)
	cfg := tinyConfig(t)
	cfg.Out = ""
	out := filepath.Join(t.TempDir(), "cmp")
	var lines bytes.Buffer
	opt := CompareOptions{Seeds: []int64{1, 2}, Out: out, Ensemble: 2, EnsembleEpochs: 2, Lines: &lines}
	cache := &baselineCache{}
	cmp, err := Compare(context.Background(), cfg, opt, RunEnv{baselines: cache})
	if err != nil {
		t.Fatalf("%v\n%s", err, lines.String())
	}
	// The raw features were clustered once per seed and view (raw, flip-averaged), and every
	// run's metrics.json holds the same baselines as the first row's run of its seed.
	if len(cache.m) != 4 {
		t.Errorf("%d baseline evaluations cached, want 2 seeds x 2 views", len(cache.m))
	}
	for _, row := range cmp.Rows[2:] {
		for k, r := range row.Runs {
			var s Summary
			raw, _ := os.ReadFile(filepath.Join(r.Dir, "metrics.json"))
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatal(err)
			}
			if s.Baseline != cmp.Rows[0].Runs[k].Metrics || s.BaselineTTA == nil || *s.BaselineTTA != cmp.Rows[1].Runs[k].Metrics {
				t.Errorf("%s seed %d: baselines %+v %+v differ from the first row's", row.Name, r.Seed, s.Baseline, s.BaselineTTA)
			}
		}
	}
	wantRows := []string{"raw features", "raw features, flip-averaged", "softmax (cross-entropy)", "triplet (batch-hard)",
		"contrastive", "Proxy-Anchor", "Group Loss", "Group Loss ensemble (2 heads)"}
	if len(cmp.Rows) != len(wantRows) {
		t.Fatalf("%d rows, want %d: %+v", len(cmp.Rows), len(wantRows), cmp.Rows)
	}
	md, err := os.ReadFile(filepath.Join(out, "compare.md"))
	if err != nil {
		t.Fatal(err)
	}
	for i, row := range cmp.Rows {
		if row.Name != wantRows[i] || len(row.Runs) != 2 || row.Runs[0].Seed != 1 || row.Runs[1].Seed != 2 {
			t.Errorf("row %d: %q with %d runs, want %q with seeds 1, 2", i, row.Name, len(row.Runs), wantRows[i])
		}
		if !(row.Mean.RecallAt1 > 0 && row.Mean.RecallAt1 <= 1) || row.Mean.NMI <= 0 {
			t.Errorf("row %q: mean %+v", row.Name, row.Mean)
		}
		if (row.Loss != "") != (row.TrainSeconds > 0) {
			t.Errorf("row %q: train seconds %g", row.Name, row.TrainSeconds)
		}
		name := row.Name
		if row.Ensemble > 1 {
			name += ", 2 epochs" // the ensemble's heads train longer than the config's 1 epoch
		}
		mdRow := "| " + name + " | " + pm(row.Mean.RecallAt1, row.Std.RecallAt1, 2) + " |"
		if !strings.Contains(string(md), mdRow) {
			t.Errorf("compare.md lacks %q:\n%s", mdRow, md)
		}
	}
	// The raw rows are the runs' baselines; the ensemble row is 2 heads of 2 epochs.
	var gl Summary
	raw, _ := os.ReadFile(filepath.Join(cmp.Rows[2].Runs[0].Dir, "metrics.json"))
	if err := json.Unmarshal(raw, &gl); err != nil {
		t.Fatal(err)
	}
	if cmp.Rows[0].Runs[0].Metrics != gl.Baseline || cmp.Rows[1].Runs[0].Metrics != *gl.BaselineTTA {
		t.Errorf("raw rows %+v / %+v, want the first run's baselines %+v / %+v", cmp.Rows[0].Runs[0].Metrics,
			cmp.Rows[1].Runs[0].Metrics, gl.Baseline, *gl.BaselineTTA)
	}
	ens := cmp.Rows[7]
	var es Summary
	raw, _ = os.ReadFile(filepath.Join(ens.Runs[1].Dir, "metrics.json"))
	if err := json.Unmarshal(raw, &es); err != nil {
		t.Fatal(err)
	}
	if len(es.Members) != 2 || es.Timing.Epochs != 2 || es.Export.EmbeddingDim != 6 || es.Members[0].Seed != 2 {
		t.Errorf("ensemble run: members %+v, epochs %d, dim %d", es.Members, es.Timing.Epochs, es.Export.EmbeddingDim)
	}
	// One progress line per run and per row.
	if n := strings.Count(lines.String(), "\n"); n != 6*2+len(wantRows) {
		t.Errorf("%d progress lines, want %d:\n%s", n, 6*2+len(wantRows), lines.String())
	}
	var doc Comparison
	raw, _ = os.ReadFile(filepath.Join(out, "compare.json"))
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc.Rows) != len(wantRows) || doc.Data.EvalClasses != 4 {
		t.Fatalf("compare.json: %v, %d rows, data %+v", err, len(doc.Rows), doc.Data)
	}

	// Again: every run is reused (same config), with the same numbers.
	lines.Reset()
	again, err := Compare(context.Background(), cfg, opt, RunEnv{})
	if err != nil {
		t.Fatal(err)
	}
	for i, row := range again.Rows {
		for k, r := range row.Runs {
			if row.Loss != "" && !r.Reused {
				t.Errorf("row %q seed %d ran again", row.Name, r.Seed)
			}
			if r.Metrics != cmp.Rows[i].Runs[k].Metrics {
				t.Errorf("row %q seed %d: %+v, first time %+v", row.Name, r.Seed, r.Metrics, cmp.Rows[i].Runs[k].Metrics)
			}
		}
	}
	// A changed config is not reused: the run folder is replaced.
	opt.Losses, opt.Ensemble, opt.Seeds = []string{"group"}, 1, []int64{1}
	cfg.Optimizer.LR *= 2
	third, err := Compare(context.Background(), cfg, opt, RunEnv{})
	if err != nil {
		t.Fatal(err)
	}
	if len(third.Rows) != 3 || third.Rows[2].Runs[0].Reused || third.Rows[2].Runs[0].Metrics == cmp.Rows[6].Runs[0].Metrics &&
		third.Rows[2].Runs[0].TrainSeconds == cmp.Rows[6].Runs[0].TrainSeconds {
		t.Errorf("changed lr: rows %+v", third.Rows)
	}
}

func TestCompareRejectsBadRows(t *testing.T) {
	cfg := tinyConfig(t)
	dir := filepath.Join(t.TempDir(), "cmp")
	_, err := Compare(context.Background(), cfg, CompareOptions{Losses: []string{"group", "nope"}, Out: dir}, RunEnv{})
	if err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("unknown loss: %v", err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("the comparison folder was created for an invalid comparison")
	}
}

// TestCompareConfigRows: rows given as whole configs run as they are (their own loss, args,
// learning rate and epochs) besides the seed and the folder, next to the loss rows; a row config
// that changes the protocol (here the class split) is refused before anything runs.
func TestCompareConfigRows(t *testing.T) {
	needORT(t)
	cfg := tinyConfig(t)
	cfg.Out = ""
	trip := cfg
	trip.Loss.Name, trip.Loss.TripletMargin, trip.Optimizer.LR, trip.Optimizer.Epochs = "triplet", 0.35, 2e-3, 2
	out := filepath.Join(t.TempDir(), "cmp")
	opt := CompareOptions{Seeds: []int64{3}, Out: out, Losses: []string{"group"}, Ensemble: 1,
		Configs: []RowConfig{{Name: "triplet, tuned", Path: "trip.yaml", Cfg: trip}}}
	cmp, err := Compare(context.Background(), cfg, opt, RunEnv{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cmp.Rows) != 4 || cmp.Rows[3].Name != "triplet, tuned" || cmp.Rows[3].Loss != "triplet" || cmp.Rows[3].Epochs != 2 {
		t.Fatalf("rows %+v", cmp.Rows)
	}
	if md, _ := os.ReadFile(filepath.Join(out, "compare.md")); !strings.Contains(string(md), "run those files as they are, the seed and the folder aside (triplet, tuned: trip.yaml)") {
		t.Errorf("compare.md does not say how the config rows ran:\n%s", md)
	}
	run, err := config.LoadConfig(filepath.Join(out, "triplet_tuned", "seed-3", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if run.Seed != 3 || run.Loss.Name != "triplet" || run.Loss.TripletMargin != 0.35 || run.Optimizer.LR != 2e-3 || run.Optimizer.Epochs != 2 {
		t.Errorf("the config row ran with seed %d, loss %s margin %g, lr %g, %d epochs", run.Seed, run.Loss.Name, run.Loss.TripletMargin, run.Optimizer.LR, run.Optimizer.Epochs)
	}
	bad := trip
	bad.ValidationClasses++
	dir := filepath.Join(t.TempDir(), "bad")
	_, err = Compare(context.Background(), cfg, CompareOptions{Out: dir, Configs: []RowConfig{{Name: "x", Path: "x.yaml", Cfg: bad}}}, RunEnv{})
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), `row "x" (x.yaml) changes the protocol`) {
		t.Errorf("a row with another split: %v", err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("the comparison folder was created for an invalid comparison")
	}
}

// TestCompareMarkdownBackbone: the table's description says whether the backbone was frozen or
// which part of it was fine-tuned.
func TestCompareMarkdownBackbone(t *testing.T) {
	c := &Comparison{Seeds: []int64{1}, Config: config.DefaultConfig()}
	c.Config.Backbone.TrainBlocks, c.Config.Backbone.LR = 2, 1e-4
	if md := c.Markdown(); !strings.Contains(md, "(last 2 block(s) fine-tuned at lr 0.0001,") {
		t.Errorf("tail config described as:\n%s", md)
	}
	c.Config.Backbone.TrainBlocks = 0
	if md := c.Markdown(); !strings.Contains(md, "(frozen,") {
		t.Errorf("head-only config described as:\n%s", md)
	}
}

// TestSameProtocolPaths: the data folder and the backbone spelled two ways (relative and absolute)
// are one protocol; another folder is not.
func TestSameProtocolPaths(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"data", "other"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	a, b := config.DefaultConfig(), config.DefaultConfig()
	a.Data, b.Data = "data", filepath.Join(dir, "data")
	a.Backbone.Path, b.Backbone.Path = "./data", filepath.Join(dir, "data")
	if !sameProtocol(a, b) {
		t.Error("the same folder spelled relative and absolute: not the same protocol")
	}
	b.Data = filepath.Join(dir, "other")
	if sameProtocol(a, b) {
		t.Error("another data folder: the same protocol")
	}
}
