package pipeline

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"gopkg.in/yaml.v3"
)

// repoRoot walks up from the test's working directory to the folder holding go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatal("no go.mod above the test directory")
		}
	}
}

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

// TestConfigFileIsDefault: configs/cub100.yaml loads, names every config key, and is
// DefaultConfig() once its relative data and backbone paths (relative to the repository root,
// where `make run` runs) resolve to the defaults' ../shared.
func TestConfigFileIsDefault(t *testing.T) {
	root := repoRoot(t)
	t.Setenv("PIPELINE_SHARED_DIR", filepath.Join(root, "..", "shared"))
	path := filepath.Join(root, "configs", "cub100.yaml")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("%v (hint: %s)", err, Hint(err))
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
	if !reflect.DeepEqual(cfg, def) {
		t.Errorf("configs/cub100.yaml differs from DefaultConfig():\n got %+v\nwant %+v", cfg, def)
	}

	// Written out in full: every key of Config appears in the file, and nothing else.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var present []string
	for _, k := range keyLines(raw) {
		present = append(present, k)
	}
	want := yamlKeys(reflect.TypeOf(Config{}), "")
	for _, k := range want {
		if !slices.Contains(present, k) {
			t.Errorf("configs/cub100.yaml lacks the key %q", k)
		}
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var leaves func(m map[string]any, prefix string) int
	leaves = func(m map[string]any, prefix string) int {
		n := 0
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				n += leaves(sub, prefix+k+".")
			} else {
				n++
			}
		}
		return n
	}
	if n := leaves(doc, ""); n != len(want) {
		t.Errorf("configs/cub100.yaml has %d leaf keys, Config has %d", n, len(want))
	}
}
