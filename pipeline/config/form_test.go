package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/internal/hint"
)

// TestConfigWrittenRoundTrip: the config a run writes (yaml.Marshal, the {name, args} form) loads
// back to the same Config, for the defaults, every preset and every implementation of every
// component with args away from their defaults; it holds the args of the chosen implementations
// only, and no flat keys.
func TestConfigWrittenRoundTrip(t *testing.T) {
	type tc struct {
		name string
		edit func(*Config)
		keys []string // written keys expected
	}
	cases := []tc{{"default", func(*Config) {}, []string{"loss.name", "loss.args.alpha", "loss.args.margin",
		"optimizer.args.lr", "optimizer.lr_schedule.args.steps", "sampler.name", "sampler.args.samples_per_class",
		"head.init", "head.classifier_init.args.scale"}}}
	for _, p := range PresetNames() {
		cases = append(cases, tc{"preset " + p, func(c *Config) { ApplyPreset(c, p) }, []string{"optimizer.lr_schedule.args.gamma"}})
	}
	cases = append(cases,
		tc{"softmax", func(c *Config) { c.Loss.Name = "softmax" }, []string{"loss.name"}},
		tc{"triplet", func(c *Config) { c.Loss.Name, c.Loss.TripletMargin = "triplet", 0.35 }, []string{"loss.args.margin"}},
		tc{"contrastive", func(c *Config) { c.Loss.Name, c.Loss.PosMargin, c.Loss.NegMargin = "contrastive", 0.1, 0.7 },
			[]string{"loss.args.pos_margin", "loss.args.neg_margin"}},
		tc{"proxy_anchor", func(c *Config) { c.Loss.Name, c.Loss.ProxyAlpha, c.Loss.ProxyMargin = "proxy_anchor", 16, 0.2 },
			[]string{"loss.args.alpha", "loss.args.margin"}},
		tc{"multi_similarity", func(c *Config) {
			c.Loss.Name, c.Loss.MSAlpha, c.Loss.MSBeta, c.Loss.MSBase, c.Loss.MSMargin = "multi_similarity", 3, 40, 0.4, 0.2
		}, []string{"loss.args.alpha", "loss.args.beta", "loss.args.base", "loss.args.margin"}},
		tc{"adamw and a schedule", func(c *Config) {
			c.Optimizer.Name, c.Optimizer.LR, c.Optimizer.WeightDecay = "adamw", 1e-3, 0.01
			c.Optimizer.LRSteps, c.Optimizer.LRGamma = []int{5, 9}, 0.5
		}, []string{"optimizer.args.weight_decay", "optimizer.lr_schedule.args.steps"}},
		tc{"adam", func(c *Config) { c.Optimizer.Name = "adam" }, []string{"optimizer.args.lr"}},
		tc{"random inits", func(c *Config) { c.Head.Init, c.Head.ClassifierInit = "random", "random" },
			[]string{"head.init", "head.classifier_init"}},
		tc{"sampler", func(c *Config) { c.Sampler = SamplerConfig{ClassesPerBatch: 3, SamplesPerClass: 5} }, []string{"sampler.args.classes_per_batch"}},
	)
	flat := []string{"loss.temperature", "loss.triplet_margin", "loss.proxy_alpha", "optimizer.lr", "optimizer.lr_steps",
		"optimizer.lr_gamma", "sampler.classes_per_batch", "head.classifier_scale"}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			c.edit(&cfg)
			b, err := yaml.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseConfig(b, "config.yaml")
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			if !reflect.DeepEqual(back, cfg) {
				t.Errorf("written config loads to another:\n got %+v\nwant %+v\n%s", back, cfg, b)
			}
			keys := leafKeys(t, b)
			for _, k := range c.keys {
				if !slices.Contains(keys, k) {
					t.Errorf("written config lacks %q:\n%s", k, b)
				}
			}
			for _, k := range flat {
				if slices.Contains(keys, k) {
					t.Errorf("written config has the key %q beside args:\n%s", k, b)
				}
			}
		})
	}

	// The parameters of implementations not chosen are not written: they load as the defaults.
	cfg := DefaultConfig()
	cfg.Loss.Name, cfg.Loss.Temperature, cfg.Head.ClassifierInit, cfg.Head.ClassifierScale = "triplet", 7, "random", 3
	b, _ := yaml.Marshal(cfg)
	back, err := ParseConfig(b, "config.yaml")
	if err != nil || back.Loss.Temperature != 24 || back.Head.ClassifierScale != 64 || back.Loss.Name != "triplet" {
		t.Errorf("unchosen args: loss %+v head %+v (%v)", back.Loss, back.Head, err)
	}
}

// TestConfigComponents: partial components over the defaults or a preset, merge keys, and the
// sections' implementations matching the packages'.
func TestConfigComponents(t *testing.T) {
	for _, c := range []struct {
		yaml  string
		check func(Config) bool
	}{
		{"loss: {name: triplet, args: {margin: 0.3}}\n", func(c Config) bool {
			return c.Loss.Name == "triplet" && c.Loss.TripletMargin == 0.3 && c.Loss.Temperature == 24
		}},
		// Without a name, the args are the current implementation's (here the preset's group).
		{"preset: cars196\nloss: {args: {temperature: 50}}\n", func(c Config) bool {
			return c.Loss.Temperature == 50 && c.Loss.AnchorsPerClass == 3 && c.Preset == "cars196"
		}},
		{"optimizer: {lr_schedule: {args: {steps: [3]}}}\n", func(c Config) bool {
			return slices.Equal(c.Optimizer.LRSteps, []int{3}) && c.Optimizer.LRGamma == 0.1
		}},
		{"optimizer: {lr_schedule: multistep, epochs: 4}\n", func(c Config) bool { return c.Optimizer.Epochs == 4 }},
		{"head: {classifier_init: {args: {scale: 8}}, init: {name: random}}\n", func(c Config) bool {
			return c.Head.ClassifierInit == "means" && c.Head.ClassifierScale == 8 && c.Head.Init == "random"
		}},
		{"sampler: {name: balanced, args: {samples_per_class: 4}}\n", func(c Config) bool {
			return c.Sampler == SamplerConfig{ClassesPerBatch: 6, SamplesPerClass: 4}
		}},
		{"loss: {name: softmax, args: {}}\n", func(c Config) bool { return c.Loss.Name == "softmax" }},
		{"optimizer: {<<: {name: adam, args: {lr: 0.01}}, epochs: 3, args: {lr: 0.02}}\n", func(c Config) bool {
			return c.Optimizer.Name == "adam" && c.Optimizer.LR == 0.02 && c.Optimizer.Epochs == 3
		}},
		{"optimizer:\n  lr_schedule: {args: {steps: []}}\n  reload_best_after: []\n", func(c Config) bool {
			return c.Optimizer.LRSteps == nil && c.Optimizer.ReloadBestAfter == nil
		}},
	} {
		cfg, err := ParseConfig([]byte(c.yaml), "c.yaml")
		if err != nil || !c.check(cfg) {
			t.Errorf("%q: %+v %+v %+v %+v (%v)", c.yaml, cfg.Loss, cfg.Optimizer, cfg.Sampler, cfg.Head, err)
		}
	}

	var kinds []string
	for _, k := range head.LossKinds {
		kinds = append(kinds, string(k))
	}
	if got := lossForm.comps[0].names(); !slices.Equal(got, kinds) {
		t.Errorf("loss names %v, head.LossKinds %v", got, kinds)
	}
	// Every arg of every implementation is a field of its section.
	cfg := DefaultConfig()
	for _, f := range componentForms {
		sec := sectionOf(&cfg, f)
		for _, c := range f.comps {
			if _, ok := fieldByKey(sec, c.field); c.field != "" && !ok {
				t.Errorf("%s: no field %q", f.path, c.field)
			}
			for _, im := range c.impls {
				for _, a := range im.args {
					if _, ok := fieldByKey(sec, a.field); !ok {
						t.Errorf("%s %s arg %s: no field %q", f.compPath(&c), im.name, a.name, a.field)
					}
				}
			}
		}
	}
}

// TestConfigComponentErrors: a component's wrong arg, name or shape is an ErrInvalid error naming
// the file, the line, the key and the component, with a hint saying what is valid.
func TestConfigComponentErrors(t *testing.T) {
	for _, c := range []struct {
		yaml, want, hint string
	}{
		{"seed: 1\nloss:\n  name: group\n  args: {temperature: 24, margin: 0.3}\n",
			`line 4: unknown key "loss.args.margin": loss "group" has no arg margin`,
			`the args of loss "group" are temperature, iterations, scaling, anchors_per_class; margin is an arg of loss triplet, proxy_anchor, multi_similarity`},
		{"loss:\n  name: softmax\n  args:\n    temperature: 3\n",
			`line 4: unknown key "loss.args.temperature": loss "softmax" has no arg temperature`, `loss "softmax" takes no args`},
		// args without a name are the default loss's (multi_similarity)
		{"loss:\n  args: {temperature: 3}\n", `line 2: unknown key "loss.args.temperature": loss "multi_similarity"`, "group"},
		{"loss:\n  name: group\n  args: {iterations: 2}\n  temperature: 3\n",
			`line 4: unknown key "loss.temperature"`, "parameters go under its args: temperature is loss.args.temperature of loss group"},
		// The flat form of earlier versions (parameters beside name) is refused with the new place.
		{"loss:\n  name: triplet\n  triplet_margin: 0.3\n",
			`line 3: unknown key "loss.triplet_margin"`, "triplet_margin is loss.args.margin of loss triplet"},
		{"optimizer:\n  lr: 0.1\n", `line 2: unknown key "optimizer.lr"`, "lr is optimizer.args.lr of optimizer adam, optimizer.args.lr of optimizer adamw"},
		{"head:\n  classifier_scale: 3\n", `line 2: unknown key "head.classifier_scale"`, "head.classifier_init.args.scale of head.classifier_init means"},
		{"sampler:\n  classes_per_batch: 3\n", `line 2: unknown key "sampler.classes_per_batch"`, "sampler.args.classes_per_batch of sampler balanced"},
		{"loss:\n  name: tripplet\n  args: {margin: 1}\n",
			`line 2: loss "tripplet" is not one of group, softmax, triplet, contrastive, proxy_anchor, multi_similarity`, "the loss values are"},
		{"loss: {name: group, args: {temperature: hot, iterations: 1}}\n",
			`line 1: loss.args.temperature: got a string "hot", want a number`, "config.yaml"},
		{"optimizer:\n  name: adam\n  args:\n    lr: fast\n", `line 4: optimizer.args.lr: got a string "fast", want a number`, "config.yaml"},
		{"optimizer:\n  args: [1]\n", `line 2: optimizer.args: got a list, want a mapping`, "config.yaml"},
		{"optimizer:\n  lr_steps: [1]\n  lr_schedule: {name: multistep, args: {gamma: 0.5}}\n",
			`line 2: unknown key "optimizer.lr_steps"`, "lr_steps is optimizer.lr_schedule.args.steps"},
		{"optimizer: {lr_schedule: {name: cosine}}\n", `line 1: optimizer.lr_schedule "cosine" is not one of multistep`,
			"the only optimizer.lr_schedule is multistep"},
		{"head:\n  classifier_init: {name: means, scale: 3}\n", `line 2: unknown key "head.classifier_init.scale"`, "{name, args}"},
		{"head:\n  classifier_init: {name: random, args: {scale: 3}}\n",
			`line 2: unknown key "head.classifier_init.args.scale": head.classifier_init "random" has no arg scale`, "scale is an arg of head.classifier_init means"},
		{"head:\n  init: [pca]\n", `line 2: head.init: got a list, want a name or {name, args}`, "config.yaml"},
		{"sampler: {name: random}\n", `line 1: sampler "random" is not one of balanced`, "the only sampler is balanced"},
		{"sampler:\n  momentum: 1\n", `line 2: unknown key "sampler.momentum"`, "the keys under sampler are: name, args"},
		{"loss: 3\n", `line 1: loss: got an integer "3", want a mapping`, "config.yaml"},
		{"loss:\n  name: triplet\n  args: {margin: 1}\n  triplet_margin: 2\n", `line 4: unknown key "loss.triplet_margin"`, ""},
		{"loss:\n  name: group\n  args: {scaling: 1, scaling: 2}\n", `"loss.args.scaling" is set again (first at line 3)`, ""},
	} {
		_, err := ParseConfig([]byte(c.yaml), "c.yaml")
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `"c.yaml"`) || !strings.Contains(err.Error(), c.want) ||
			!strings.Contains(hint.Of(err), c.hint) {
			t.Errorf("%q:\n error %v\n hint  %q\nwant error with %q, hint with %q", c.yaml, err, hint.Of(err), c.want, c.hint)
		}
	}
}

// TestValidateAnchorsGroupOnly: anchors_per_class (a Group Loss arg) is checked against the
// sampler only when the loss is group.
func TestValidateAnchorsGroupOnly(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Loss.Name = LossGroup
	cfg.Sampler.SamplesPerClass = 2 // anchors_per_class 2
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "anchors_per_class 2 must be below") {
		t.Errorf("group with 2 anchors of 2 samples: %v", err)
	}
	cfg.Loss.Name = "triplet"
	if err := cfg.Validate(); err != nil {
		t.Errorf("triplet with 2 samples per class: %v", err)
	}
}

// TestConfigMergeBomb: merge keys (<<) of merges of merges (2^40 keys once expanded) in a
// component section are read in linear time, and give the keys yaml.v3 would.
func TestConfigMergeBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("loss:\n  m0: &m0 {name: triplet, args: {margin: 0.4}}\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&b, "  m%d: &m%d {<<: [*m%d, *m%d]}\n", i, i, i-1, i-1)
	}
	b.WriteString("  <<: [*m40, *m40]\n")
	_, err := ParseConfig([]byte(b.String()), "bomb.yaml")
	if err == nil || !strings.Contains(err.Error(), `line 2: unknown key "loss.m0"`) {
		t.Errorf("merge bomb: %v", err)
	}
	cfg, err := ParseConfig([]byte("optimizer:\n  <<: [{epochs: 3, name: adam}, {epochs: 4, args: {lr: 0.5}}]\n  name: adamw\n"), "m.yaml")
	if err != nil || cfg.Optimizer.Epochs != 3 || cfg.Optimizer.Name != "adamw" || cfg.Optimizer.LR != 0.5 {
		t.Errorf("merges: %+v (%v)", cfg.Optimizer, err)
	}
}
