package pipeline

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/train"
)

// TestStagedResumeTarget: a resumed --force staging folder "<out>.partial-*" replaces <out>
// (resolved beside it, whatever the working folder of the original run), any other folder is
// resumed in place; the replacement also works when <out> was removed meanwhile.
func TestStagedResumeTarget(t *testing.T) {
	for _, tc := range []struct{ dir, out, want string }{
		{"/runs/a.partial-123", "runs/a", "/runs/a"},
		{"/x/runs/a.partial-9", "/elsewhere/a/", "/x/runs/a"},
		{"/runs/a", "runs/a", ""},
		{"/runs/ab.partial-1", "runs/a", ""},
		{"/runs/a.partial-1", "", ""},
	} {
		if got := stagedTarget(tc.dir, tc.out); got != tc.want {
			t.Errorf("stagedTarget(%q, %q) = %q, want %q", tc.dir, tc.out, got, tc.want)
		}
	}
	dir := t.TempDir()
	staged, out := filepath.Join(dir, "run.partial-1"), filepath.Join(dir, "run")
	if err := os.Mkdir(staged, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := replaceFolder(staged, out); err != nil {
		t.Fatalf("replace a removed run folder: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 || entries[0].Name() != "run" {
		t.Errorf("folder holds %v", entries)
	}
}

// TestResumeRefusals: Resume refuses, with config.ErrInvalid and a hint, what is not an interrupted run
// folder, before loading any model.
func TestResumeRefusals(t *testing.T) {
	dir := t.TempDir()
	finished := filepath.Join(dir, "finished")
	os.Mkdir(finished, 0o755)
	os.WriteFile(filepath.Join(finished, "config.yaml"), []byte("seed: 1\n"), 0o644)
	os.WriteFile(filepath.Join(finished, "metrics.json"), []byte(`{"status": "ok"}`), 0o644)
	badCfg := filepath.Join(dir, "badcfg")
	os.Mkdir(badCfg, 0o755)
	os.WriteFile(filepath.Join(badCfg, "config.yaml"), []byte("seeed: 1\n"), 0o644)
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct{ dir, want string }{
		{filepath.Join(dir, "missing"), "no such file"},
		{file, "is not a folder"},
		{dir, "has no config.yaml"},
		{finished, "finished (metrics.json says status ok)"},
		{badCfg, `unknown key "seeed"`},
	} {
		_, err := Resume(context.Background(), tc.dir, RunEnv{})
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Resume(%q) = %v, want config.ErrInvalid saying %q", tc.dir, err, tc.want)
		}
	}
}

// TestResumeSameRunTiny: a run stopped after its third epoch and resumed ends with the metrics,
// history, model selection and model.onnx bytes of the uninterrupted run, for the head alone
// (PCA start and classifier means, which a resumed run skips) and for the tail + head: both
// continue through the one training path. (cmd/pipeline's TestRunKillResume* kill real
// processes on CUB images.)
func TestResumeSameRunTiny(t *testing.T) {
	needORT(t)
	for _, kind := range []string{"head", "tail"} {
		t.Run(kind, func(t *testing.T) {
			cfg := tinyConfig(t)
			if kind == "tail" {
				cfg = tinyTailConfig(t)
			}
			cfg.Head.Init, cfg.Head.ClassifierInit = "pca", "means"
			cfg.Optimizer.Epochs, cfg.KeepTrained, cfg.Export.Int8 = 6, true, false
			ref, err := Run(context.Background(), cfg, RunEnv{})
			if err != nil {
				t.Fatal(err)
			}
			stop := errors.New("stopped after epoch 3")
			cfg.Out = filepath.Join(t.TempDir(), "stopped")
			env := RunEnv{afterEpoch: func(h []train.EpochStats) error {
				if h[len(h)-1].Epoch == 3 {
					return stop
				}
				return nil
			}}
			if _, err := Run(context.Background(), cfg, env); !errors.Is(err, stop) {
				t.Fatalf("stopped run: %v, want %v", err, stop)
			}
			got, err := Resume(context.Background(), cfg.Out, RunEnv{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Training.ResumedFromEpoch != 3 {
				t.Errorf("resumed from epoch %d, want 3", got.Training.ResumedFromEpoch)
			}
			if got.Trained != ref.Trained || got.Training.BestEpoch != ref.Training.BestEpoch || got.Training.BestScore != ref.Training.BestScore {
				t.Errorf("resumed: trained %+v best epoch %d score %v\nuninterrupted: %+v best epoch %d score %v",
					got.Trained, got.Training.BestEpoch, got.Training.BestScore, ref.Trained, ref.Training.BestEpoch, ref.Training.BestScore)
			}
			for i, h := range ref.Training.History {
				if g := got.Training.History[i]; g.Loss != h.Loss || g.Score != h.Score {
					t.Errorf("epoch %d: loss %v score %v, uninterrupted %v %v", h.Epoch, g.Loss, g.Score, h.Loss, h.Score)
				}
			}
			a, err := os.ReadFile(ref.Export.Path)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(got.Export.Path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Errorf("model.onnx differs from the uninterrupted run's (%d vs %d bytes)", len(b), len(a))
			}
		})
	}
}
