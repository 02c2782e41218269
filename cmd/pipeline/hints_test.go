package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestRunErrorNamesOnlyExistingCheckpoints: a run that diverges in its first epoch names no
// checkpoint file that does not exist (it named last.ckpt, which only completed epochs write).
func TestRunErrorNamesOnlyExistingCheckpoints(t *testing.T) {
	needORT(t)
	dir := t.TempDir()
	manifest := badDataset(t, filepath.Join(dir, "data"), []int{6, 6, 6, 6})
	cfg := badWrite(t, filepath.Join(dir, "cfg.yaml"), pointwiseConfig+"optimizer:\n  epochs: 3\n  args: {lr: 1.0e+300}\n")
	out := filepath.Join(dir, "run")
	r := badRun("--config", cfg, "--data", manifest, "--backbone", pointwiseModel(t, dir, "Relu"), "--out", out, "--cache", filepath.Join(dir, "cache"))
	if r.code != 3 || !strings.Contains(r.stderr, "epoch 1 step") {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	for _, p := range regexp.MustCompile(`/[^ ,()"]*\.ckpt`).FindAllString(r.stderr, -1) {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the error names %s: %v\n%s", p, err, r.stderr)
		}
	}
}
