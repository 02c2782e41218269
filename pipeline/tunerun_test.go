package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/tune"
)

// tuneFixture writes a head-only base config on the tiny CNN and 12 classes of 10 images (train on
// classes 0-5, 2 of them for validation; evaluate on 6-11) whose evaluation images are not
// images: reading any of them fails the run (on_bad_image fail). It returns the config path.
func tuneFixture(t *testing.T, epochs int) string {
	t.Helper()
	return tuneFixtureOn(t, epochs, fmt.Sprintf("{path: %s, train_blocks: 0}", tinyCNN), 6)
}

// tuneFixtureOn is tuneFixture with the config's backbone (a YAML flow mapping) and image size.
func tuneFixtureOn(t *testing.T, epochs int, backbone string, size int) string {
	t.Helper()
	// Close colours under the noise: the classes overlap, so validation scores are below 1.
	manifest := colorDatasetOf(t, 12, 10, func(c int) [3]int { return [3]int{100 + 7*c, 120 + 5*c, 140 - 6*c} })
	ds, err := data.Load(manifest)
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range ds.Items {
		if it.Label >= 6 {
			if err := os.WriteFile(ds.Resolve(i), []byte("evaluation image: must never be read"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg := fmt.Sprintf(`data: %s
cache: %s
validation_classes: 2
threads: 1
on_bad_image: fail
backbone: %s
preprocess: {size: [%d, %d]}
head: {embedding_dim: 3, center: false}
loss: {name: group, args: {anchors_per_class: 1}}
sampler: {args: {classes_per_batch: 3, samples_per_class: 4}}
optimizer: {args: {lr: 1.0e-3}, epochs: %d}
`, manifest, filepath.Join(t.TempDir(), "cache"), backbone, size, size, epochs)
	p := filepath.Join(t.TempDir(), "base.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeSpace(t *testing.T, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "space.yaml")
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTune: the evaluation classes' files are never read (they are not images and on_bad_image is
// fail, yet the study runs); a trial whose learning rate makes training diverge is recorded as
// nan and the study goes on; best.yaml is a config LoadConfig reads, with the best trial's values;
// a second call with more trials runs only the new ones.
func TestTune(t *testing.T) {
	needORT(t)
	base := tuneFixture(t, 2)
	space := writeSpace(t, "optimizer.args.lr: [1.0e-3, 1.0e+30]\nloss.args.temperature: uniform(8, 48)\n")
	out := filepath.Join(t.TempDir(), "study")
	o := TuneOptions{Config: base, Space: space, Trials: 2, Out: out, Seed: 1}
	var progress bytes.Buffer
	st, err := Tune(context.Background(), o, RunEnv{}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	var ok, nan *tune.Trial
	for i := range st.Trials {
		switch tr := &st.Trials[i]; tr.Params["optimizer.args.lr"] {
		case 1e-3:
			ok = tr
		case 1e30:
			nan = tr
		}
	}
	if ok == nil || nan == nil {
		t.Fatalf("the 2 trials did not take both learning rates: %+v", st.Trials)
	}
	if ok.Status != tune.StatusOK || len(ok.Scores) != 3 || ok.Score <= 0 || ok.Score > 1 {
		t.Errorf("good trial %+v", *ok)
	}
	if nan.Status != tune.StatusNaN || !strings.Contains(nan.Error, "non-finite") {
		t.Errorf("diverging trial %+v, want status nan", *nan)
	}
	if &st.Trials[st.Best] != ok {
		t.Errorf("best is trial %d, want the good one", st.Best+1)
	}
	if n := strings.Count(progress.String(), "\n"); n != 2 {
		t.Errorf("%d progress lines, want 1 per trial:\n%s", n, progress.String())
	}
	best, err := config.LoadConfig(filepath.Join(out, tune.BestFile))
	if err != nil {
		t.Fatalf("best.yaml: %v", err)
	}
	if best.Optimizer.LR != 1e-3 || best.Loss.Temperature != ok.Params["loss.args.temperature"] || best.Head.EmbeddingDim != 3 {
		t.Errorf("best.yaml: lr %g temperature %g dim %d, want the good trial's %v", best.Optimizer.LR, best.Loss.Temperature, best.Head.EmbeddingDim, ok.Params)
	}
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "trial-") {
			t.Errorf("trial folder %s left behind", e.Name())
		}
	}

	progress.Reset()
	o.Trials = 3
	st2, err := Tune(context.Background(), o, RunEnv{}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(st2.Trials) != 3 || !strings.HasPrefix(progress.String(), "trial 3/3 ") || strings.Count(progress.String(), "\n") != 1 {
		t.Errorf("resumed study: %d trials, progress %q; want only trial 3 run", len(st2.Trials), progress.String())
	}
	for i := range 2 {
		if st2.Trials[i].Score != st.Trials[i].Score || st2.Trials[i].Seconds != st.Trials[i].Seconds {
			t.Errorf("trial %d changed on resume: %+v, was %+v", i+1, st2.Trials[i], st.Trials[i])
		}
	}

	// A plain run of the same config does read the evaluation images: the fixture is effective.
	cfg, err := config.LoadConfig(base)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Out = filepath.Join(t.TempDir(), "run")
	if _, err := Run(context.Background(), cfg, RunEnv{}); err == nil || !strings.Contains(err.Error(), "c6/") {
		t.Errorf("run on the fixture: %v, want an error naming an evaluation image", err)
	}
}

// TestTuneTail: with tail fine-tuning in the base config, trials train the backbone's last block
// with the head (backbone.lr is tunable), still without reading the evaluation classes, and each
// trial starts from the pretrained block: two trials of the same values score the same before
// training, and so does a third after them.
func TestTuneTail(t *testing.T) {
	needORT(t)
	const epochs = 4
	base := tuneFixtureOn(t, epochs, fmt.Sprintf("{path: %s, train_blocks: 1, lr: 1.0e-3}", tinyBlocks), 8)
	space := writeSpace(t, "backbone.lr: [1.0e-1]\noptimizer.args.lr: [1.0e-2]\n")
	o := TuneOptions{Config: base, Space: space, Trials: 3, Out: filepath.Join(t.TempDir(), "study"), Seed: 1}
	st, err := Tune(context.Background(), o, RunEnv{}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range st.Trials {
		if tr.Status != tune.StatusOK || len(tr.Scores) != epochs+1 {
			t.Fatalf("trial %d: %+v", tr.Index+1, tr)
		}
		if tr.Scores[0] != st.Trials[0].Scores[0] {
			t.Errorf("trial %d scores %.6f before training, trial 1 %.6f: it did not start from the pretrained block",
				tr.Index+1, tr.Scores[0], st.Trials[0].Scores[0])
		}
	}
	// The check above needs a trial that ends away from the pretrained block: one whose best
	// epoch (the parameters it keeps) is not epoch 0.
	if s := st.Trials[0].Scores; slices.Max(s[1:]) <= s[0] {
		t.Errorf("no epoch beat the pretrained block (scores %v): the fixture cannot tell shared weights from fresh ones", s)
	}
	best, err := config.LoadConfig(filepath.Join(o.Out, tune.BestFile))
	if err != nil {
		t.Fatal(err)
	}
	if best.Backbone.LR != 0.1 || best.Backbone.TrainBlocks != 1 {
		t.Errorf("best.yaml: backbone %+v, want lr 0.01 and train_blocks 1", best.Backbone)
	}
}

// TestTuneHalving: the hook stops a trial's training at a rung exactly when successive halving
// says so (the rule itself is tested in package tune): with a frozen learning rate and one that
// scrambles the 3-d head, two trials each, the later trials of the worse one stop after epoch 1.
func TestTuneHalving(t *testing.T) {
	needORT(t)
	base := tuneFixture(t, 4)
	space := writeSpace(t, "optimizer.args.lr: [1.0e-12, 1.0]\n")
	h := tune.Halving{Eta: 2, MinEpochs: 1}
	o := TuneOptions{Config: base, Space: space, Trials: 4, Out: filepath.Join(t.TempDir(), "study"), Seed: 3, Halving: h}
	st, err := Tune(context.Background(), o, RunEnv{}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var rung1 []float64
	pruned := 0
	for _, tr := range st.Trials {
		if len(tr.Scores) < 2 {
			t.Fatalf("trial %d has no epoch-1 score: %+v", tr.Index+1, tr)
		}
		want, epochs := tune.StatusOK, 4
		if !h.Promote(rung1, tr.Scores[1]) {
			want, epochs = tune.StatusPruned, 1
			pruned++
		}
		if tr.Status != want || tr.Epochs() != epochs {
			t.Errorf("trial %d (lr %v, epoch-1 score %.4f, earlier %v): %s after %d epochs, want %s after %d",
				tr.Index+1, tr.Params["optimizer.args.lr"], tr.Scores[1], rung1, tr.Status, tr.Epochs(), want, epochs)
		}
		rung1 = append(rung1, tr.Scores[1])
	}
	if pruned == 0 {
		t.Fatalf("no trial was stopped: %+v", st.Trials)
	}
}

// TestTuneBadSpace: a key the config does not have, a value it refuses and a key that would
// change the shared features are config.ErrInvalid errors naming the space file's line and key, before
// any image is read.
func TestTuneBadSpace(t *testing.T) {
	base := tuneFixture(t, 1)
	for _, c := range []struct{ src, key, msg string }{
		{"optimizer.args.lr: [1.0e-3]\nloss.args.margin: [0.1, 0.2]\n", "loss.args.margin", "margin"},
		{"loss.args.anchors_per_class: int(1, 9)\n", "loss.args.anchors_per_class", "anchors_per_class"},
		{"seed: [1, 2]\n", "seed", "what every trial shares"},
		{"backbone.lr: [1.0e-4, 1.0e-3]\n", "backbone.lr", "trains the head only"},
		{"optimizer.epochs_total: [3]\n", "optimizer.epochs_total", "epochs_total"},
		// Keys apply together: the loss the space names has no such arg (the base's group args are
		// dropped with the name, so the first key alone is fine and the second is named).
		{"loss.name: [multi_similarity]\nloss.args.temperature: [24]\n", "loss.args.temperature", `loss "multi_similarity" has no arg temperature`},
	} {
		out := filepath.Join(t.TempDir(), "study")
		_, err := Tune(context.Background(), TuneOptions{Config: base, Space: writeSpace(t, c.src), Trials: 1, Out: out}, RunEnv{}, &bytes.Buffer{})
		var se *tune.SpaceError
		if !errors.Is(err, config.ErrInvalid) || !errors.As(err, &se) || se.Key != c.key || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q: %v, want config.ErrInvalid naming key %q and %q", c.src, err, c.key, c.msg)
			continue
		}
		if want := strings.Count(c.src[:strings.Index(c.src, c.key)], "\n") + 1; se.Line != want {
			t.Errorf("%q: line %d, want %d", c.src, se.Line, want)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%q: the study folder was created", c.src)
		}
	}
}

// TestSpaceFiles: every space of configs/spaces parses and applies to configs/cub100.yaml, the
// default (tail fine-tuning) config they are written for.
func TestSpaceFiles(t *testing.T) {
	root := testenv.RepoRoot(t)
	files, err := filepath.Glob(filepath.Join(root, "configs", "spaces", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("configs/spaces: %v %v", files, err)
	}
	basePath := filepath.Join(root, "configs", "cub100.yaml")
	raw, err := os.ReadFile(basePath)
	if err != nil {
		t.Fatal(err)
	}
	base, err := config.ParseConfig(raw, basePath)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sp, err := tune.ParseSpace(src, f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		tc := trialConfigs{raw: raw, name: basePath, base: base}
		if err := tc.check(sp); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestMultiSimilarityConfig: loss {name: multi_similarity, args} reaches the head's loss with its
// args, the unset ones at their defaults, and a head trains with it.
func TestMultiSimilarityConfig(t *testing.T) {
	cfg, err := config.ParseConfig([]byte("loss: {name: multi_similarity, args: {beta: 40, margin: 0.2}}\n"), "ms.yaml")
	if err != nil {
		t.Fatal(err)
	}
	hl := cfg.Loss.HeadLoss()
	if hl.Kind != "multi_similarity" || hl.MSAlpha != 2 || hl.MSBeta != 40 || hl.MSBase != 0.5 || hl.MSMargin != 0.2 {
		t.Errorf("head loss %+v", hl)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	needORT(t)
	run := tinyConfig(t)
	run.Loss = cfg.Loss
	run.Optimizer.Epochs = 2
	sum, err := Run(context.Background(), run, RunEnv{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Training.Steps == 0 || !(sum.Trained.RecallAt1 > 0) {
		t.Errorf("multi_similarity run: %+v %+v", sum.Training, sum.Trained)
	}
}
