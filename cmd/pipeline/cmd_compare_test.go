package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/pipeline/config"
)

// tinyCNNConfig runs the 6x6-input test CNN (4-d features): a run takes well under a second.
const tinyCNNConfig = `backbone:
  path: ../../backbone/testdata/tiny_cnn.onnx
  train_blocks: 0
preprocess:
  size: [6, 6]
threads: 1
validation_classes: 1
head:
  embedding_dim: 3
sampler:
  args: {classes_per_batch: 2, samples_per_class: 4}
optimizer:
  epochs: 1
eval:
  kmeans_restarts: 1
`

// TestRunPresetFlag: --preset goes under the config file, which goes under the other flags.
func TestRunPresetFlag(t *testing.T) {
	needORT(t)
	dir := t.TempDir()
	data := badDataset(t, filepath.Join(dir, "data"), []int{6, 6, 6, 6, 6, 6})
	cfgFile := badWrite(t, filepath.Join(dir, "tiny.yaml"), tinyCNNConfig)
	out := filepath.Join(dir, "run")
	r := toolRun("run", "--config", cfgFile, "--preset", "cars196", "--epochs", "2", "--ensemble", "2",
		"--data", data, "--cache", filepath.Join(dir, "cache"), "--out", out)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	cfg, err := config.LoadConfig(filepath.Join(out, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Preset != "cars196" || cfg.Loss.Temperature != 79 || cfg.Loss.AnchorsPerClass != 3 || // preset
		cfg.Sampler.ClassesPerBatch != 2 || cfg.Sampler.SamplesPerClass != 4 || cfg.Head.EmbeddingDim != 3 || // file
		cfg.Optimizer.Epochs != 2 || cfg.Ensemble != 2 || cfg.Optimizer.LR != 2e-4 { // flags, preset
		t.Errorf("resolved config: preset %q loss %+v sampler %+v optimizer %+v ensemble %d", cfg.Preset, cfg.Loss, cfg.Sampler, cfg.Optimizer, cfg.Ensemble)
	}
	if _, err := os.Stat(filepath.Join(out, "member-2", "checkpoint.ckpt")); err != nil {
		t.Errorf("ensemble member 2: %v", err)
	}
	r = toolRun("run", "--preset", "imagenet", "--out", filepath.Join(dir, "bad"))
	if r.code != 2 || !strings.Contains(r.stderr, `unknown preset "imagenet"`) || !strings.Contains(r.stderr, "hint: the presets are cars196, cub, sop") {
		t.Errorf("unknown preset: exit %d\n%s", r.code, r.stderr)
	}
}

func TestCompareCommand(t *testing.T) {
	for _, args := range [][]string{{"--seeds", "1,x"}, {"--seeds", "1,1"}, {"--ensemble", "0"}, {"extra"}} {
		if r := toolRun(append([]string{"compare"}, args...)...); r.code != 2 {
			t.Errorf("compare %v: exit %d, want 2\n%s", args, r.code, r.stderr)
		}
	}
	needORT(t)
	dir := t.TempDir()
	data := badDataset(t, filepath.Join(dir, "data"), []int{6, 6, 6, 6, 6, 6})
	cfgFile := badWrite(t, filepath.Join(dir, "tiny.yaml"), tinyCNNConfig)
	out := filepath.Join(dir, "cmp")
	r := toolRun("compare", "--config", cfgFile, "--data", data, "--cache", filepath.Join(dir, "cache"), "--out", out,
		"--seeds", "3,4", "--losses", "group,softmax", "--ensemble", "2")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	md, err := os.ReadFile(filepath.Join(out, "compare.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range []string{"| raw features |", "| raw features, flip-averaged |", "| Group Loss |", "| softmax (cross-entropy) |",
		"| Group Loss ensemble (2 heads) |"} {
		if !strings.Contains(string(md), row) || !strings.Contains(r.stdout, row) {
			t.Errorf("compare.md or stdout lacks the row %q:\n%s", row, r.stdout)
		}
	}
	for _, sub := range []string{"group/seed-3", "group/seed-4", "softmax/seed-4", "group_ensemble2/seed-3"} {
		if _, err := os.Stat(filepath.Join(out, sub, "model.onnx")); err != nil {
			t.Errorf("run folder %s: %v", sub, err)
		}
	}
	if !strings.Contains(r.stdout, "Group Loss                         seed 3") {
		t.Errorf("no progress line for the Group Loss, seed 3:\n%s", r.stdout)
	}
}
