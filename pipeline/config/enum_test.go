package config

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/grouploss/pipeline/internal/hint"
	"github.com/grouploss/pipeline/pipeline/export"
	"github.com/grouploss/pipeline/pipeline/train"
)

// TestEnumKeys: each closed set of names parses its values from YAML, JSON and flags, writes them
// back, and refuses any other value with an error naming the key, the value and the allowed
// values (in a YAML file, also the file and the line, with a hint).
func TestEnumKeys(t *testing.T) {
	for _, c := range []struct {
		yaml    string // sets the key to "bogus"
		key     string
		allowed string
		line    int
	}{
		{"seed: 1\nloss: {name: bogus}\n", "loss", "group, softmax, triplet, contrastive, proxy_anchor, multi_similarity", 2},
		{"optimizer:\n  name: bogus\n", "optimizer", "adam, adamw, radam", 2},
		{"on_bad_image: bogus\n", "on_bad_image", "fail, skip", 1},
		{"backbone:\n  dequantize: bogus\n", "backbone.dequantize", "auto, always, never", 2},
		{"export:\n  reduce_range: bogus\n", "export.reduce_range", "auto, true, false", 2},
		{"export:\n  calibration: bogus\n", "export.calibration", "minmax, percentile, entropy", 2},
		{"head:\n  init: bogus\n", "head.init", "pca, random", 2},
		{"head:\n  classifier_init: {name: bogus}\n", "head.classifier_init", "means, random", 2},
	} {
		_, err := ParseConfig([]byte(c.yaml), "e.yaml")
		want := strings.Join([]string{`"e.yaml" line `, strconv.Itoa(c.line), ": ", c.key, ` "bogus" is not one of `, c.allowed}, "")
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) || !strings.Contains(hint.Of(err), "the "+c.key+" values are "+c.allowed) {
			t.Errorf("%q: %v (hint %q), want %q", c.yaml, err, hint.Of(err), want)
		}
		if n := strings.Count(err.Error(), "bogus"); n != 1 {
			t.Errorf("%q: %d errors about the value, want 1: %v", c.yaml, n, err)
		}
	}

	// Every value of every set reads back from YAML, JSON and a flag.
	cfg := DefaultConfig()
	for _, v := range lossNames.values {
		cfg.Loss.Name = v
		roundTrip(t, cfg)
	}
	for _, v := range optimizerNames.values {
		cfg.Optimizer.Name = v
		roundTrip(t, cfg)
	}
	cfg.OnBadImage, cfg.Backbone.Dequantize, cfg.Export.ReduceRange, cfg.Export.Calibration = BadImageSkip, DequantizeNever, ReduceRangeOn, CalibrationEntropy
	cfg.Head.Init, cfg.Head.ClassifierInit = HeadInitRandom, ClassifierInitRandom
	roundTrip(t, cfg)

	var d Dequantize
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.TextVar(&d, "dequantize", DequantizeAuto, "")
	if err := fs.Parse([]string{"--dequantize", "always"}); err != nil || d != DequantizeAlways {
		t.Errorf("flag: %q %v", d, err)
	}
	// flag reports the error with %v: only its message is kept.
	if err := fs.Parse([]string{"--dequantize", "sometimes"}); err == nil || !strings.Contains(err.Error(), `backbone.dequantize "sometimes" is not one of auto, always, never`) {
		t.Errorf("bad flag: %v", err)
	}
	var ee *EnumError
	if err := d.UnmarshalText([]byte("sometimes")); !errors.As(err, &ee) || ee.Key != "backbone.dequantize" || ee.Value != "sometimes" || !errors.Is(err, ErrInvalid) {
		t.Errorf("UnmarshalText: %v", err)
	}
	var o OptimizerName
	if err := json.Unmarshal([]byte(`"sgd"`), &o); err == nil || !strings.Contains(err.Error(), `optimizer "sgd" is not one of adam, adamw, radam`) {
		t.Errorf("json: %v", err)
	}

	// A value set in Go is checked by Validate.
	bad := DefaultConfig()
	bad.Backbone.Dequantize, bad.Export.Calibration = "sometimes", "max"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), `backbone.dequantize "sometimes" is not one of auto, always, never`) ||
		!strings.Contains(err.Error(), `export.calibration "max" is not one of minmax, percentile, entropy`) {
		t.Errorf("Validate: %v", err)
	}
}

// TestEnumValuesArePackages: the sets list what the implementing packages accept, and the
// components' names are their name fields' sets.
func TestEnumValuesArePackages(t *testing.T) {
	if got, want := convert[string](calibrations.values), export.CalibrationMethods; !slices.Equal(got, want) {
		t.Errorf("calibrations %v, export %v", got, want)
	}
	for _, v := range optimizerNames.values {
		if _, err := train.NewOptimizer(train.OptimizerKind(v), 0); err != nil {
			t.Error(err)
		}
	}
	for _, c := range []struct {
		comp   *component
		values []string
	}{
		{&lossForm.comps[0], convert[string](lossNames.values)},
		{&optimizerForm.comps[0], convert[string](optimizerNames.values)},
		{&headForm.comps[0], convert[string](headInits.values)},
		{&headForm.comps[1], convert[string](classifierInits.values)},
	} {
		if got := c.comp.names(); !slices.Equal(got, c.values) {
			t.Errorf("component names %v, enum %v", got, c.values)
		}
	}
}

func roundTrip(t *testing.T, cfg Config) {
	t.Helper()
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseConfig(b, "config.yaml")
	if err != nil || back.Loss.Name != cfg.Loss.Name || back.Optimizer.Name != cfg.Optimizer.Name || back.OnBadImage != cfg.OnBadImage ||
		back.Backbone.Dequantize != cfg.Backbone.Dequantize || back.Export != cfg.Export || back.Head != cfg.Head {
		t.Errorf("YAML round trip: %v\n%s", err, b)
	}
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON Config
	if err := json.Unmarshal(j, &fromJSON); err != nil || fromJSON.Loss.Name != cfg.Loss.Name || fromJSON.Export != cfg.Export || fromJSON.Head != cfg.Head {
		t.Errorf("JSON round trip: %v\n%s", err, j)
	}
}
