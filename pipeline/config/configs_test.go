package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/grouploss/pipeline/internal/testenv"
)

// TestReadyMadeConfigs: every file of configs/ loads and validates; the paper's settings equal
// their presets, the head-only recipe is the default with the frozen backbone (and the Group Loss),
// the Group Loss config the default with that loss, and the best config the default.
func TestReadyMadeConfigs(t *testing.T) {
	root := testenv.RepoRoot(t)
	files, err := filepath.Glob(filepath.Join(root, "configs", "*.yaml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("configs/: %v %v, want cub100, cub100-head, cub, cars196, sop", files, err)
	}
	for _, f := range files {
		cfg, err := LoadConfig(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, p := range PresetNames() {
		got, err := LoadConfig(filepath.Join(root, "configs", p+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		want, err := LoadConfigPreset("", p)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("configs/%s.yaml differs from --preset %s:\n got %+v\nwant %+v", p, p, got, want)
		}
	}
	head, err := LoadConfig(filepath.Join(root, "configs", "cub100-head.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Backbone.TrainBlocks, want.Head.Center, want.Optimizer.Epochs = 0, false, 20
	want.Loss.Name, want.Optimizer.EMA = LossGroup, 0
	if !reflect.DeepEqual(head, want) {
		t.Errorf("configs/cub100-head.yaml:\n got %+v\nwant %+v", head, want)
	}
	// The Group Loss config is configs/cub100.yaml (the default, TestConfigFileIsDefault) but for
	// its loss and the moving average; the best config is (for now) the default.
	gl, err := LoadConfig(filepath.Join(root, "configs", "cub100-grouploss.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want, err = LoadConfig(filepath.Join(root, "configs", "cub100.yaml")); err != nil {
		t.Fatal(err)
	}
	want.Loss.Name, want.Optimizer.EMA = LossGroup, 0
	if !reflect.DeepEqual(gl, want) {
		t.Errorf("configs/cub100-grouploss.yaml:\n got %+v\nwant %+v", gl, want)
	}
	if best, err := LoadConfig(filepath.Join(root, "configs", "cub100-best.yaml")); err != nil || !reflect.DeepEqual(best, DefaultConfig()) {
		t.Errorf("configs/cub100-best.yaml: %v\n got %+v\nwant the default %+v", err, best, DefaultConfig())
	}
	if _, err := os.Stat(filepath.Join(root, "configs", "cub100.yaml")); err != nil {
		t.Error(err)
	}
}
