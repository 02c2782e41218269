package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTuneCommand: missing required flags and a bad space exit 2 naming what is wrong; a tiny study
// prints one line per trial and the best trial, and writes tune.json, tune.md and best.yaml.
func TestTuneCommand(t *testing.T) {
	for _, args := range [][]string{{"--space", "s.yaml", "--out", "o"}, {"--config", "c.yaml", "--out", "o"}, {"extra"}} {
		if r := toolRun(append([]string{"tune"}, args...)...); r.code != 2 {
			t.Errorf("tune %v: exit %d, want 2\n%s", args, r.code, r.stderr)
		}
	}
	dir := t.TempDir()
	cfg := badWrite(t, filepath.Join(dir, "tiny.yaml"), tinyCNNConfig+"data: "+badDataset(t, filepath.Join(dir, "data"), []int{6, 6, 6, 6, 6, 6})+
		"\ncache: "+filepath.Join(dir, "cache")+"\n")
	bad := badWrite(t, filepath.Join(dir, "bad.yaml"), "optimizer.args.lr: loguniform(1e-4, 1e-3)\nloss.args.tempreature: [8, 16]\n")
	r := toolRun("tune", "--config", cfg, "--space", bad, "--out", filepath.Join(dir, "bad-study"))
	if r.code != 2 || !strings.Contains(r.stderr, "bad.yaml line 2: key \"loss.args.tempreature\"") {
		t.Errorf("misspelt key: exit %d\n%s", r.code, r.stderr)
	}
	needORT(t)
	space := badWrite(t, filepath.Join(dir, "space.yaml"), "optimizer.args.lr: loguniform(1e-4, 1e-2)\nloss.name: [group]\nloss.args.temperature: [8, 16]\n")
	out := filepath.Join(dir, "study")
	r = toolRun("tune", "--config", cfg, "--space", space, "--trials", "2", "--out", out)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "trial 1/2 ") || !strings.Contains(r.stdout, "trial 2/2 ") || !strings.Contains(r.stdout, "best: trial ") {
		t.Errorf("stdout:\n%s", r.stdout)
	}
	for _, f := range []string{"tune.json", "tune.md", "best.yaml"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
}
