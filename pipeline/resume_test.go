package pipeline

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStagedResumeTarget: a resumed --force staging folder "<out>.partial-*" replaces <out>
// (resolved beside it, whatever the working folder of the original run), any other folder is
// resumed in place; the replacement also works when <out> was removed meanwhile.
func TestStagedResumeTarget(t *testing.T) {
	for _, tc := range []struct{ dir, out, want string }{
		{"/runs/a.partial-123", "runs/a", "/runs/a"},
		{"/x/runs/a.partial-9", "/elsewhere/a/", "/x/runs/a"},
		{"/runs/a", "runs/a", ""},
		{"/runs/ab.partial-1", "runs/a", ""},
		{"/runs/a.partial-1", "", ""},
	} {
		if got := stagedTarget(tc.dir, tc.out); got != tc.want {
			t.Errorf("stagedTarget(%q, %q) = %q, want %q", tc.dir, tc.out, got, tc.want)
		}
	}
	dir := t.TempDir()
	staged, out := filepath.Join(dir, "run.partial-1"), filepath.Join(dir, "run")
	if err := os.Mkdir(staged, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := replaceFolder(staged, out); err != nil {
		t.Fatalf("replace a removed run folder: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 || entries[0].Name() != "run" {
		t.Errorf("folder holds %v", entries)
	}
}

// TestResumeRefusals: Resume refuses, with ErrConfig and a hint, what is not an interrupted run
// folder, before loading any model.
func TestResumeRefusals(t *testing.T) {
	dir := t.TempDir()
	finished := filepath.Join(dir, "finished")
	os.Mkdir(finished, 0o755)
	os.WriteFile(filepath.Join(finished, "config.yaml"), []byte("seed: 1\n"), 0o644)
	os.WriteFile(filepath.Join(finished, "metrics.json"), []byte(`{"status": "ok"}`), 0o644)
	badCfg := filepath.Join(dir, "badcfg")
	os.Mkdir(badCfg, 0o755)
	os.WriteFile(filepath.Join(badCfg, "config.yaml"), []byte("seeed: 1\n"), 0o644)
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct{ dir, want string }{
		{filepath.Join(dir, "missing"), "no such file"},
		{file, "is not a folder"},
		{dir, "has no config.yaml"},
		{finished, "finished (metrics.json says status ok)"},
		{badCfg, `unknown key "seeed"`},
	} {
		_, err := Resume(context.Background(), tc.dir, RunEnv{})
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Resume(%q) = %v, want ErrConfig saying %q", tc.dir, err, tc.want)
		}
	}
}
