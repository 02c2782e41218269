package pipeline

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/pipeline/config"
)

// TestForceReplacesOnlyRunFolders: --force refused to replace a folder that is not a run folder
// (`run --data D/data --out D --force` deleted the data and a notes file, exit 0), or a run
// folder holding the data, the backbone or the cache; a run folder is still replaced.
func TestForceReplacesOnlyRunFolders(t *testing.T) {
	needORT(t)
	cfg := tinyConfig(t)
	d := filepath.Dir(filepath.Dir(cfg.Data)) // the temporary folder holding the dataset folder
	notes := filepath.Join(d, "notes.txt")
	if err := os.WriteFile(notes, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	check := func(name string, c config.Config, want string) {
		t.Helper()
		c.Force = true
		_, err := Run(context.Background(), c, RunEnv{})
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want config.ErrInvalid saying %q", name, err, want)
		}
		if _, err := os.Stat(cfg.Data); err != nil {
			t.Fatalf("%s: the data are gone: %v", name, err)
		}
		if b, err := os.ReadFile(notes); err != nil || string(b) != "keep me" {
			t.Fatalf("%s: the notes file is gone: %v", name, err)
		}
	}
	c := cfg
	c.Out = d
	check("not a run folder", c, "holds neither config.yaml nor metrics.json")
	os.WriteFile(filepath.Join(d, "config.yaml"), []byte("seed: 1\n"), 0o644)
	check("a run folder holding the data", c, "holds the data in use")

	// A run folder beside its data, holding the cache: refused; without it: replaced.
	c = cfg
	c.Out = filepath.Join(t.TempDir(), "run")
	if _, err := Run(context.Background(), c, RunEnv{}); err != nil {
		t.Fatal(err)
	}
	c.Cache = filepath.Join(c.Out, "cache")
	check("a run folder holding the cache", c, "holds the cache in use")
	c.Cache = cfg.Cache
	c.Force = true
	if _, err := Run(context.Background(), c, RunEnv{}); err != nil {
		t.Fatalf("replacing a run folder: %v", err)
	}
}

// TestRunFolderClaimed: a run on an --out that another run holds fails at once, naming the
// folder, and writes nothing into it (two runs on one --out both succeeded, and the first printed
// the path of a model that the second had written).
func TestRunFolderClaimed(t *testing.T) {
	needORT(t)
	cfg := tinyConfig(t)
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		t.Fatal(err)
	}
	release, err := claimRunFolder(cfg.Out) // as the other run does (a lock per open folder)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), cfg, RunEnv{})
	if !errors.Is(err, errRunFolderBusy) || !strings.Contains(err.Error(), cfg.Out) {
		t.Fatalf("second run: %v, want a run-folder-in-use error naming %q", err, cfg.Out)
	}
	if entries, _ := os.ReadDir(cfg.Out); len(entries) != 0 {
		t.Fatalf("the second run wrote %d file(s) into the folder the first holds", len(entries))
	}
	release()
	if _, err := Run(context.Background(), cfg, RunEnv{}); err != nil {
		t.Fatalf("after the other run ended: %v", err)
	}
	// --force on a folder held by another run: refused as well, the folder unchanged.
	release, err = claimRunFolder(cfg.Out)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	cfg.Force = true
	if _, err := Run(context.Background(), cfg, RunEnv{}); !errors.Is(err, errRunFolderBusy) {
		t.Fatalf("--force on a held folder: %v", err)
	}
	if partial, _ := filepath.Glob(cfg.Out + ".partial-*"); len(partial) != 0 {
		t.Fatalf("staging folders left: %v", partial)
	}
}

// TestLateConfigErrorLeavesNoFile: a config error found after extraction (head.init pca with an
// embedding larger than the features) leaves no run folder (config.yaml and metrics.json were
// left behind although config errors leave no file).
func TestLateConfigErrorLeavesNoFile(t *testing.T) {
	needORT(t)
	cfg := tinyConfig(t)
	cfg.Head.Init, cfg.Head.EmbeddingDim = "pca", 5 // tiny_cnn's features have 4 values
	_, err := Run(context.Background(), cfg, RunEnv{})
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("got %v, want config.ErrInvalid", err)
	}
	if _, err := os.Stat(cfg.Out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("run folder left behind: %v", err)
	}
	// With --force over a run folder: the old folder is unchanged, no staging folder is left.
	ok := tinyConfig(t)
	ok.Data, ok.Cache, ok.Out = cfg.Data, cfg.Cache, cfg.Out
	if _, err := Run(context.Background(), ok, RunEnv{}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(cfg.Out, "metrics.json"))
	cfg.Force = true
	if _, err := Run(context.Background(), cfg, RunEnv{}); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("got %v, want config.ErrInvalid", err)
	}
	after, _ := os.ReadFile(filepath.Join(cfg.Out, "metrics.json"))
	if string(before) != string(after) {
		t.Fatal("the previous run's metrics.json changed")
	}
	if partial, _ := filepath.Glob(cfg.Out + ".partial-*"); len(partial) != 0 {
		t.Fatalf("staging folders left: %v", partial)
	}
}
