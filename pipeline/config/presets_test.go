package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/grouploss/pipeline/internal/hint"
)

// TestApplyPreset: each preset sets the reference code's hyperparameters (train.py, class
// Hyperparameters) and nothing of the model.
func TestApplyPreset(t *testing.T) {
	cases := []struct {
		name                      string
		classes, samples, anchors int
		lr, wd, temp              float64
		trainClasses              int
	}{
		{"cub", 6, 9, 2, 1.563663718906821e-4, 6.059722614369727e-6, 24, 0},
		{"cars196", 5, 7, 3, 2e-4, 4.863656728256105e-7, 79, 0},
		{"sop", 10, 6, 2, 6.077651100709081e-4, 5.2724883734490575e-12, 54, 11318},
	}
	if got := PresetNames(); !reflect.DeepEqual(got, []string{"cars196", "cub", "sop"}) {
		t.Errorf("PresetNames() = %v", got)
	}
	for _, tc := range cases {
		cfg := DefaultConfig()
		cfg.Loss.Name = "triplet"
		if err := ApplyPreset(&cfg, tc.name); err != nil {
			t.Fatal(err)
		}
		want := DefaultConfig()
		want.Preset, want.TrainClasses = tc.name, tc.trainClasses
		want.Loss = LossConfig{Name: "group", Temperature: tc.temp, Iterations: 1, Scaling: 1, AnchorsPerClass: tc.anchors}
		want.Sampler = SamplerConfig{ClassesPerBatch: tc.classes, SamplesPerClass: tc.samples}
		want.Optimizer = OptimizerConfig{Name: "radam", LR: tc.lr, WeightDecay: tc.wd, Epochs: 70, LRSteps: []int{30}, LRGamma: 0.1,
			ReloadBestAfter: []int{30, 50}}
		if !reflect.DeepEqual(cfg, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, cfg, want)
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	cfg := DefaultConfig()
	if err := ApplyPreset(&cfg, "cub200"); !errors.Is(err, ErrInvalid) || !strings.Contains(hint.Of(err), "cars196, cub, sop") {
		t.Errorf("unknown preset: %v (hint %q)", err, hint.Of(err))
	}
	if !reflect.DeepEqual(cfg, DefaultConfig()) {
		t.Error("a failed ApplyPreset changed the config")
	}
}

// TestPresetOrder: defaults < preset < config file < flags (the flags are applied by the command
// over LoadConfigPreset's result; the flag --preset replaces the file's preset key).
func TestPresetOrder(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	file := write("c.yaml", "preset: cars196\noptimizer:\n  args: {lr: 0.001}\nsampler:\n  args: {classes_per_batch: 4}\n")
	cfg, err := LoadConfig(file)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Preset != "cars196" || cfg.Loss.Temperature != 79 || cfg.Loss.AnchorsPerClass != 3 || cfg.Optimizer.LR != 1e-3 ||
		cfg.Optimizer.WeightDecay != 4.863656728256105e-7 || cfg.Optimizer.Epochs != 70 || cfg.Sampler != (SamplerConfig{4, 7}) {
		t.Errorf("file preset cars196 + lr + classes_per_batch: %+v %+v %+v", cfg.Loss, cfg.Optimizer, cfg.Sampler)
	}
	// --preset sop replaces the file's cars196; the file's keys still win over it.
	cfg, err = LoadConfigPreset(file, "sop")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Preset != "sop" || cfg.Loss.Temperature != 54 || cfg.Loss.AnchorsPerClass != 2 || cfg.Optimizer.LR != 1e-3 ||
		cfg.Sampler != (SamplerConfig{4, 6}) || cfg.TrainClasses != 11318 {
		t.Errorf("--preset sop over the file: %+v %+v %+v", cfg.Loss, cfg.Optimizer, cfg.Sampler)
	}
	// No file: the defaults and the preset.
	cfg, err = LoadConfigPreset("", "cub")
	want := DefaultConfig()
	ApplyPreset(&want, "cub")
	if err != nil || !reflect.DeepEqual(cfg, want) {
		t.Errorf("LoadConfigPreset(\"\", cub) = %+v, %v", cfg, err)
	}
	if cfg, err = LoadConfigPreset("", ""); err != nil || !reflect.DeepEqual(cfg, DefaultConfig()) {
		t.Errorf("LoadConfigPreset(\"\", \"\") = %+v, %v", cfg, err)
	}
	// The resolved config a run writes (every key) loads back to itself.
	cfg, _ = LoadConfigPreset(file, "sop")
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	back, err := LoadConfig(write("resolved.yaml", string(b)))
	if err != nil || !reflect.DeepEqual(back, cfg) {
		t.Errorf("resolved config does not load back to itself: %v\n got %+v\nwant %+v", err, back, cfg)
	}
	// An unknown preset in the file names its line; in a flag, the name.
	bad := write("bad.yaml", "seed: 3\npreset: imagenet\n")
	if _, err := LoadConfig(bad); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "line 2") ||
		!strings.Contains(err.Error(), `"imagenet"`) || !strings.Contains(hint.Of(err), "cub") {
		t.Errorf("unknown preset in file: %v (hint %q)", err, hint.Of(err))
	}
	if _, err := LoadConfigPreset(file, "imagenet"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `"imagenet"`) {
		t.Errorf("unknown --preset: %v", err)
	}
	// Validate checks the keys too.
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Preset = "x" }, `preset "x"`},
		{func(c *Config) { c.Ensemble = -1 }, "ensemble -1 < 0"},
		{func(c *Config) { c.Ensemble, c.Backbone.TrainBlocks = 2, 1 }, "ensemble 2"},
		{func(c *Config) { c.Loss.PretrainEpochs = c.Optimizer.Epochs }, fmt.Sprintf("loss.pretrain_epochs %d must be >= 0 and below optimizer.epochs %[1]d", DefaultConfig().Optimizer.Epochs)},
		{func(c *Config) { c.Loss.PretrainEpochs = -1 }, "loss.pretrain_epochs -1"},
		{func(c *Config) { c.Optimizer.ReloadBestAfter = []int{0} }, "optimizer.reload_best_after: epoch 0 < 1"},
		{func(c *Config) { c.Optimizer.EMA = 1 }, "optimizer.ema 1 must be in [0, 1)"},
		{func(c *Config) { c.Optimizer.EMA = -0.5 }, "optimizer.ema -0.5 must be in [0, 1)"},
	} {
		cfg := DefaultConfig()
		c.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate: %v, want %q", err, c.want)
		}
	}
}
