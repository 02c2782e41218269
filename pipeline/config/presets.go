package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/grouploss/pipeline/internal/hint"
)

// A preset (config key `preset`, flag --preset) starts the config from the training
// hyperparameters that the Group Loss reference code (github.com/dvl-tum/group_loss, train.py,
// class Hyperparameters) uses for one benchmark, instead of this tool's defaults. The order is:
// DefaultConfig, then the preset, then the config file's keys, then the command-line flags.
//
// A preset sets the loss (the Group Loss: temperature T, 1 replicator iteration, scaling 1,
// anchors per class), the sampler (classes x samples per class), RAdam with the reference's
// learning rate and weight decay, 70 epochs, and the learning-rate schedule, and the number of
// training classes of the benchmark's split. The model stays this tool's (frozen backbone + head,
// PCA and class-means initializations, flip averaging): the reference fine-tunes all of
// BN-Inception.
//
// The schedule: the reference sets the learning rate to lr/10 at the start of epoch 31 and again
// (to the same lr/10, not lr/100) at the start of epoch 51, each time after reloading the best
// model so far (keeping its RAdam state). train.Fit multiplies the learning rate by lr_gamma
// after each epoch listed in lr_steps and goes on from the best parameters after each epoch of
// reload_best_after (both 1-based: "after epoch 30" = from epoch 31 on), so the reference's
// schedule is lr_steps [30], lr_gamma 0.1, reload_best_after [30, 50]. The reference selects the
// best model on its test classes; here it is chosen on validation_classes.
type preset struct {
	classes, samples, anchors int
	lr, weightDecay, temp     float64
	// trainClasses is the benchmark's number of training classes, 0 for half of the classes
	// (CUB-200-2011: 100 of 200, Cars196: 98 of 196; SOP trains on 11318 of 22634).
	trainClasses int
}

var presets = map[string]preset{
	"cub":     {classes: 6, samples: 9, anchors: 2, lr: 1.563663718906821e-4, weightDecay: 6.059722614369727e-6, temp: 24},
	"cars196": {classes: 5, samples: 7, anchors: 3, lr: 2e-4, weightDecay: 4.863656728256105e-7, temp: 79},
	"sop":     {classes: 10, samples: 6, anchors: 2, lr: 6.077651100709081e-4, weightDecay: 5.2724883734490575e-12, temp: 54, trainClasses: 11318},
}

// PresetNames lists the presets: cub, cars196, sop.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ApplyPreset sets cfg.Preset and the training hyperparameters of the named preset (see the
// comment on presets above). "" leaves cfg unchanged. An unknown name is an ErrInvalid error.
func ApplyPreset(cfg *Config, name string) error {
	if name == "" {
		return nil
	}
	p, ok := presets[name]
	if !ok {
		return hint.With(fmt.Errorf("%w: unknown preset %q", ErrInvalid, name),
			"the presets are "+strings.Join(PresetNames(), ", ")+" (the Group Loss reference code's hyperparameters)")
	}
	cfg.Preset = name
	cfg.TrainClasses = p.trainClasses
	cfg.Loss = LossConfig{Name: LossGroup, Temperature: p.temp, Iterations: 1, Scaling: 1, AnchorsPerClass: p.anchors,
		PretrainEpochs: cfg.Loss.PretrainEpochs}
	cfg.Sampler = SamplerConfig{ClassesPerBatch: p.classes, SamplesPerClass: p.samples}
	cfg.Optimizer = OptimizerConfig{Name: "radam", LR: p.lr, WeightDecay: p.weightDecay, Epochs: 70,
		LRSteps: []int{30}, LRGamma: 0.1, ReloadBestAfter: []int{30, 50}}
	return nil
}

// LoadConfigPreset is the configuration of `pipeline run --config path --preset name`:
// DefaultConfig, then the preset name (when "", the file's `preset` key), then the file's other
// keys. path "" means no file. Errors wrap ErrInvalid.
func LoadConfigPreset(path, name string) (Config, error) {
	if path == "" {
		cfg := DefaultConfig()
		return cfg, ApplyPreset(&cfg, name)
	}
	cfg, err := LoadConfig(path)
	if err != nil || name == "" || name == cfg.Preset {
		return cfg, err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return cfg, hint.With(fmt.Errorf("%w: %w", ErrInvalid, err), "check the --config path")
	}
	return overPreset(raw, path, name)
}

// overPreset decodes the YAML config raw (already checked by ParseConfig; name stands for the
// file in errors) over DefaultConfig with the preset applied; the result's Preset is preset.
func overPreset(raw []byte, name, preset string) (Config, error) {
	cfg := DefaultConfig()
	if err := ApplyPreset(&cfg, preset); err != nil {
		if line := keyLine(raw, "preset"); line > 0 && preset == fileString(raw, "preset") {
			err = hint.With(fmt.Errorf("%w: %q line %d: unknown preset %q", ErrInvalid, name, line, preset), hint.Of(err))
		}
		return DefaultConfig(), err
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, yamlError(name, raw, err)
	}
	cfg.Preset = preset
	if len(cfg.Adapted) == 0 { // "adapted: []" is the default, nil
		cfg.Adapted = nil
	}
	return cfg, nil
}

// keyLine is the line of the dotted key in the YAML document raw, 0 when absent.
func keyLine(raw []byte, key string) int {
	best := 0
	for line, k := range keyLines(raw) {
		if k == key && (best == 0 || line < best) {
			best = line
		}
	}
	return best
}

// fileString is the top-level string value of key in raw ("" when absent or not a string).
func fileString(raw []byte, key string) string {
	var doc map[string]any
	if yaml.Unmarshal(raw, &doc) != nil {
		return ""
	}
	s, _ := doc[key].(string)
	return s
}

// paperErrors lists what is wrong with the keys preset and ensemble (for Validate).
func (c *Config) paperErrors() []string {
	var errs []string
	if _, ok := presets[c.Preset]; c.Preset != "" && !ok {
		errs = append(errs, fmt.Sprintf("preset %q: want one of %s", c.Preset, strings.Join(PresetNames(), ", ")))
	}
	if c.Ensemble < 0 {
		errs = append(errs, fmt.Sprintf("ensemble %d < 0", c.Ensemble))
	}
	if c.Ensemble > 1 && c.Backbone.TrainsTail() {
		errs = append(errs, fmt.Sprintf("ensemble %d: ensembles train heads on frozen features; not with backbone.train_blocks or trainable_from (--train-blocks 0 trains heads only)", c.Ensemble))
	}
	return errs
}
