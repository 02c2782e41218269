package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/grouploss/pipeline/internal/hint"
	"github.com/grouploss/pipeline/internal/testenv"
)

// yamlKeys lists the dotted keys of every leaf field of the struct type t ("optimizer.lr").
func yamlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			keys = append(keys, yamlKeys(f.Type, prefix+name+".")...)
		} else {
			keys = append(keys, prefix+name)
		}
	}
	return keys
}

// TestConfigFileIsDefault: configs/cub100.yaml loads, is DefaultConfig() once its relative data
// and backbone paths (relative to the repository root, where `make run` runs) resolve to the
// defaults' ../shared, has exactly the keys a run folder's config.yaml has, and shows every
// implementation of a component not chosen with all its args in a valid example.
func TestConfigFileIsDefault(t *testing.T) {
	root := testenv.RepoRoot(t)
	t.Setenv("PIPELINE_SHARED_DIR", filepath.Join(root, "..", "shared"))
	path := filepath.Join(root, "configs", "cub100.yaml")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("%v (hint: %s)", err, hint.Of(err))
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
	def := DefaultConfig()
	if got := filepath.Join(root, cfg.Data); got != filepath.Clean(def.Data) {
		t.Errorf("data resolves to %q, want the default %q", got, def.Data)
	}
	if got := filepath.Join(root, cfg.Backbone.Path); got != filepath.Clean(def.Backbone.Path) {
		t.Errorf("backbone.path resolves to %q, want the default %q", got, def.Backbone.Path)
	}
	cfg.Data, cfg.Backbone.Path = def.Data, def.Backbone.Path
	// `lr_steps: []` decodes to an empty slice, the default is nil: the same schedule.
	if len(cfg.Optimizer.LRSteps) == 0 && len(def.Optimizer.LRSteps) == 0 {
		cfg.Optimizer.LRSteps = def.Optimizer.LRSteps
	}
	if len(cfg.Optimizer.ReloadBestAfter) == 0 && len(def.Optimizer.ReloadBestAfter) == 0 {
		cfg.Optimizer.ReloadBestAfter = def.Optimizer.ReloadBestAfter
	}
	if !reflect.DeepEqual(cfg, def) {
		t.Errorf("configs/cub100.yaml differs from DefaultConfig():\n got %+v\nwant %+v", cfg, def)
	}

	// Written out in full: the file has the keys of a run folder's config.yaml (components
	// {name, args} with the args of the chosen implementations), and nothing else.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	written, err := yaml.Marshal(def)
	if err != nil {
		t.Fatal(err)
	}
	have, want := leafKeys(t, raw), leafKeys(t, written)
	for _, k := range want {
		if !slices.Contains(have, k) {
			t.Errorf("configs/cub100.yaml lacks the key %q", k)
		}
	}
	for _, k := range have {
		if !slices.Contains(want, k) {
			t.Errorf("configs/cub100.yaml has the key %q, which config.yaml does not", k)
		}
	}
	// Every field of Config is written, or is a component's name or arg.
	for _, k := range yamlKeys(reflect.TypeOf(Config{}), "") {
		sec, field, _ := strings.Cut(k, ".")
		f := formOf(sec)
		if slices.Contains(want, k) || (f != nil && (f.nameOf(field) != nil || f.argOf(field) != nil)) {
			continue
		}
		t.Errorf("the Config key %q is not written", k)
	}

	// The implementations not chosen are shown, each on a comment line that is a config
	// fragment ("#   loss: {name: triplet, args: {margin: 0.2}}") giving all its args at the
	// values that mean the defaults.
	shown := map[string][]string{} // "loss triplet" -> the example's keys
	for _, m := range reExample.FindAllStringSubmatch(string(raw), -1) {
		ex, err := ParseConfig([]byte(m[1]), "example")
		if err != nil {
			t.Errorf("example %q: %v", m[1], err)
			continue
		}
		same := DefaultConfig()
		var names []string
		for _, f := range componentForms {
			exSec, sameSec := sectionOf(&ex, f), sectionOf(&same, f)
			for i := range f.comps {
				c := &f.comps[i]
				im, ok := c.current(exSec)
				if !ok {
					t.Errorf("example %q: no %s", m[1], f.compPath(c))
					continue
				}
				if dim, _ := c.current(sectionOf(&def, f)); dim.name != im.name {
					names = append(names, f.compPath(c)+" "+im.name)
					if c.field != "" { // the same config with the default args
						nf, _ := fieldByKey(sameSec, c.field)
						nf.SetString(im.name)
					}
				}
			}
		}
		if len(names) != 1 {
			t.Errorf("example %q shows %d implementations not chosen (%v), want 1", m[1], len(names), names)
			continue
		}
		shown[names[0]] = leafKeys(t, []byte(m[1]))
		if a, b := effective(ex), effective(same); !reflect.DeepEqual(a, b) {
			t.Errorf("example %q is not the default args:\n got %+v\nwant %+v", m[1], a, b)
		}
	}
	for _, f := range componentForms {
		for i := range f.comps {
			c := &f.comps[i]
			dim, _ := c.current(sectionOf(&def, f))
			for _, im := range c.impls {
				if im.name == dim.name {
					continue
				}
				keys, ok := shown[f.compPath(c)+" "+im.name]
				if !ok {
					t.Errorf("configs/cub100.yaml shows no example of %s %q", f.compPath(c), im.name)
					continue
				}
				for _, a := range im.args {
					if k := f.compPath(c) + ".args." + a.name; !slices.Contains(keys, k) {
						t.Errorf("the example of %s %q lacks %s", f.compPath(c), im.name, k)
					}
				}
			}
		}
	}
}

// reExample matches a comment line that is a one-line config fragment setting a component.
var reExample = regexp.MustCompile(`(?m)^\s*#\s+((?:head|loss|optimizer|sampler): \{.*\})\s*$`)

// leafKeys lists the dotted keys of the leaves (scalars and lists) of the YAML document raw.
func leafKeys(t *testing.T, raw []byte) []string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var keys []string
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			walk(n.Content[0], path)
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				walk(n.Content[i+1], p)
			}
		default:
			keys = append(keys, path)
		}
	}
	walk(&doc, "")
	return keys
}

func formOf(section string) *form {
	for _, f := range componentForms {
		if f.path == section {
			return f
		}
	}
	return nil
}

// sectionOf is the (settable) section struct of cfg that f describes.
func sectionOf(cfg *Config, f *form) reflect.Value {
	v, ok := fieldByKey(reflect.ValueOf(cfg).Elem(), f.path)
	if !ok {
		panic("no section " + f.path)
	}
	return v
}

// effective is c with the loss's margins as the loss uses them (0 means the default).
func effective(c Config) Config {
	hl := c.Loss.HeadLoss()
	c.Loss.TripletMargin, c.Loss.PosMargin, c.Loss.NegMargin = hl.TripletMargin, hl.PosMargin, hl.NegMargin
	c.Loss.ProxyAlpha, c.Loss.ProxyMargin = hl.ProxyAlpha, hl.ProxyMargin
	c.Loss.MSAlpha, c.Loss.MSBeta, c.Loss.MSBase, c.Loss.MSMargin = hl.MSAlpha, hl.MSBeta, hl.MSBase, hl.MSMargin
	return c
}

func TestLoadConfigBadInput(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, yaml string
		want       []string // substrings of the error
		hint       string   // substring of hint.Of(err)
	}{
		{"unknown top-level key", "seed: 2\nepochs: 3\n",
			[]string{`line 2: unknown key "epochs"`}, "the keys at the top level are: data, train_classes,"},
		{"unknown nested key", "head:\n  embedding_dim: 8\n  embeding_dim: 8\n",
			[]string{`line 3: unknown key "head.embeding_dim"`}, "the keys under head are: embedding_dim, center, normalize, init"},
		{"unknown key two levels down", "optimizer:\n  args: {lr: 0.1}\n  momentum: 0.9\n",
			[]string{`line 3: unknown key "optimizer.momentum"`}, "the keys under optimizer are: name, args, epochs, lr_schedule"},
		{"string for an integer", "seed: 1\noptimizer:\n  epochs: ten\n",
			[]string{`line 3: optimizer.epochs: got a string "ten", want an integer`}, "config.yaml of any run folder"},
		{"list for a number", "optimizer: {args: {lr: [0.1]}}\n",
			[]string{"line 1: optimizer.args.lr: got a list, want a number"}, "config.yaml"},
		{"bad item of a block list", "optimizer:\n  reload_best_after:\n    - 5\n    - later\n",
			[]string{`line 4: optimizer.reload_best_after: got a string "later", want an integer`}, "config.yaml"},
		{"scalar for a fixed-size list", "preprocess:\n  size: 224\n",
			[]string{`line 2: preprocess.size: got an integer "224", want a list of 2 integers`}, "config.yaml"},
		{"string for a boolean", "head:\n  center: maybe\n",
			[]string{`line 2: head.center: got a string "maybe", want true or false`}, "config.yaml"},
		{"two errors", "seed: x\nthreads: y\n",
			[]string{`line 1: seed: got a string "x", want an integer; line 2: threads: got a string "y", want an integer`}, "config.yaml"},
		{"syntax error", "seed: [1\n", []string{"line 1:", "did not find expected"}, "fix the YAML syntax"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, fmt.Sprintf("c%d.yaml", i))
			if err := os.WriteFile(p, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(p)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			for _, w := range append(tc.want, fmt.Sprintf("%q", p)) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if h := hint.Of(err); !strings.Contains(h, tc.hint) {
				t.Errorf("hint %q lacks %q", h, tc.hint)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		p := filepath.Join(dir, "nope.yaml")
		_, err := LoadConfig(p)
		if !errors.Is(err, ErrInvalid) || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), p) || hint.Of(err) != "check the --config path" {
			t.Fatalf("error %v, hint %q", err, hint.Of(err))
		}
	})
	t.Run("valid", func(t *testing.T) {
		p := filepath.Join(dir, "ok.yaml")
		if err := os.WriteFile(p, []byte("on_bad_image: skip\noptimizer:\n  lr_schedule: {args: {steps: [3, 5]}}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(p)
		if err != nil || cfg.OnBadImage != "skip" || len(cfg.Optimizer.LRSteps) != 2 || cfg.Optimizer.Epochs != DefaultConfig().Optimizer.Epochs {
			t.Fatalf("LoadConfig = %+v, %v", cfg, err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		cfg.OnBadImage = "ignore"
		if err := cfg.Validate(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `on_bad_image "ignore" is not one of fail, skip`) {
			t.Fatalf("Validate = %v", err)
		}
	})
}
