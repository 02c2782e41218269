package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
)

func TestCheckRunFolder(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	full := filepath.Join(dir, "full")
	file := filepath.Join(dir, "file")
	for _, d := range []string{empty, full} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(full, "metrics.json"), file} {
		if err := os.WriteFile(f, []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name, out string
		force     bool
		reuse     bool
		err, hint string
	}{
		{"new", filepath.Join(dir, "new"), false, false, "", ""},
		{"empty", empty, false, false, "", ""},
		{"non-empty", full, false, false, fmt.Sprintf(`run folder %q is not empty (it holds "metrics.json")`, full), "pass --force"},
		{"non-empty with force", full, true, true, "", ""},
		{"a file", file, true, false, "not a directory", "pass a folder as --out"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reuse, err := checkRunFolder(tc.out, tc.force)
			if reuse != tc.reuse {
				t.Errorf("reuse = %v, want %v", reuse, tc.reuse)
			}
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.err) || !strings.Contains(Hint(err), tc.hint) {
				t.Errorf("error %v (hint %q), want config.ErrInvalid with %q and hint %q", err, Hint(err), tc.err, tc.hint)
			}
		})
	}
}

func TestReplaceFolder(t *testing.T) {
	dir := t.TempDir()
	old, staged := filepath.Join(dir, "run"), filepath.Join(dir, "run.partial-1")
	for d, content := range map[string]string{old: "old", staged: "new"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "metrics.json"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := replaceFolder(staged, old); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(old, "metrics.json")); string(b) != "new" {
		t.Errorf("run folder holds %q after the swap", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left beside the run folder: %v", entries)
	}
	// A staged folder that vanished: the old run stays in place.
	if err := replaceFolder(filepath.Join(dir, "gone"), old); err == nil {
		t.Fatal("replacing with a missing folder succeeded")
	}
	if b, _ := os.ReadFile(filepath.Join(old, "metrics.json")); string(b) != "new" {
		t.Errorf("the run folder was lost after a failed swap: %q", b)
	}
}

// memDataset is a dataset of counts[c] images of class c, named "class<c>".
func memDataset(counts ...int) *data.Dataset {
	ds := &data.Dataset{Source: "mem.csv"}
	line := 2
	for c, n := range counts {
		ds.Classes = append(ds.Classes, fmt.Sprintf("class%d", c))
		for i := 0; i < n; i++ {
			ds.Items = append(ds.Items, data.Item{Path: fmt.Sprintf("%d/%d.png", c, i), Label: c, Class: ds.Classes[c], Line: line})
			line++
		}
	}
	return ds
}

func TestSplitClassesBadInput(t *testing.T) {
	cases := []struct {
		name          string
		ds            *data.Dataset
		train, val    int
		config        bool // wraps config.ErrInvalid (exit code 2)
		err, hint     string
		fit, evalImgs int // on success
	}{
		{"default half of 4", memDataset(2, 3, 2, 2), 0, 0, false, "", "", 2, 4},
		{"single-image training class is left out", memDataset(3, 1, 3, 3, 3, 3), 0, 0, false, "", "", 2, 9},
		{"single-image training class leaves one", memDataset(3, 1, 3, 3), 0, 0, false,
			`1 of the 2 training classes of "mem.csv" have 2 images or more`, "pass --train-classes", 0, 0},
		{"single-image evaluation class is fine", memDataset(3, 3, 3, 1), 0, 0, false, "", "", 2, 4},
		{"three classes: half is one", memDataset(2, 2, 2), 0, 0, false,
			`"mem.csv" has 3 classes: half of them, 1, are too few`, "pass --train-classes 2", 0, 0},
		{"two classes in all", memDataset(2, 2), 0, 0, false, "has 2 classes", "add classes", 0, 0},
		{"train classes = all", memDataset(2, 2, 2, 2), 4, 0, true,
			`train_classes 4 leaves no class of the 4 in "mem.csv" to evaluate on`, "between 2 and 3", 0, 0},
		{"train classes > all", memDataset(2, 2, 2, 2), 9, 0, true, "train_classes 9 leaves no class of the 4", "between 2 and 3", 0, 0},
		{"validation leaves one", memDataset(2, 2, 2, 2, 2, 2), 3, 2, true,
			"2 validation classes leave fewer than 2 of the 3 training classes", "--validation-classes 1 or less", 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := splitClasses(tc.ds, tc.train, tc.val, 1)
			if tc.err == "" {
				if err != nil || len(s.fit) != tc.fit || len(s.evalIdx) != tc.evalImgs {
					t.Fatalf("split fit %v eval images %d, err %v; want %d, %d", s.fit, len(s.evalIdx), err, tc.fit, tc.evalImgs)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(Hint(err), tc.hint) {
				t.Fatalf("error %v (hint %q), want %q and hint %q", err, Hint(err), tc.err, tc.hint)
			}
			if errors.Is(err, config.ErrInvalid) != tc.config {
				t.Errorf("errors.Is(err, config.ErrInvalid) = %v, want %v", !tc.config, tc.config)
			}
		})
	}
}

// TestRunEarlyErrorsWriteNothing: errors found before the backbone is loaded (config, folder,
// data, split) leave no run folder behind, and a non-empty run folder is refused untouched.
func TestRunEarlyErrorsWriteNothing(t *testing.T) {
	dir := t.TempDir()
	manifest := filepath.Join(dir, "m.csv")
	if err := os.WriteFile(manifest, []byte("path,label\na.png,0\nb.png,0\nc.png,zebra\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	full := filepath.Join(dir, "full")
	if err := os.Mkdir(full, 0o755); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(full, "metrics.json")
	if err := os.WriteFile(keep, []byte(`{"status":"ok"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		edit    func(*config.Config)
		isCfg   bool
		want    string
		outFile string // a file that must exist after (else: cfg.Out must not exist)
	}{
		{"invalid config", func(c *config.Config) { c.Optimizer.Epochs = 0 }, true, "optimizer.epochs 0 < 1", ""},
		{"missing data", func(c *config.Config) { c.Data = filepath.Join(dir, "none") }, false, "no such file", ""},
		{"bad manifest", func(c *config.Config) { c.Data = manifest }, false, `line 4: bad label "zebra"`, ""},
		{"non-empty run folder", func(c *config.Config) { c.Out = full }, true, "is not empty", keep},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.DefaultConfig()
			cfg.Data = manifest
			cfg.Backbone.Path = filepath.Join(dir, "missing.onnx")
			cfg.Out = filepath.Join(dir, fmt.Sprint("run", i))
			tc.edit(&cfg)
			sum, err := Run(context.Background(), cfg, RunEnv{})
			if err == nil || sum != nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, config.ErrInvalid) != tc.isCfg {
				t.Fatalf("Run = %v, %v; want an error with %q (config error %v)", sum, err, tc.want, tc.isCfg)
			}
			if tc.outFile != "" {
				if b, _ := os.ReadFile(tc.outFile); string(b) != `{"status":"ok"}` {
					t.Errorf("%s changed to %q", tc.outFile, b)
				}
			} else if _, err := os.Stat(cfg.Out); !os.IsNotExist(err) {
				t.Errorf("run folder %s created (%v)", cfg.Out, err)
			}
		})
	}
}
