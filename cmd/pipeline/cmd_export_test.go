package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/pipeline"
)

// exportRunFolder makes a run folder without a run: the tiny test model as model.onnx and a
// config.yaml pointing at a 4-class image folder (2 trained, 2 evaluated) with 6x6 preprocessing.
func exportRunFolder(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	model, err := os.ReadFile(toolModel(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.onnx"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("data: %s\ntrain_classes: 2\nvalidation_classes: 0\nthreads: 1\nbackbone:\n  path: %s\n"+
		"preprocess:\n  size: [6, 6]\n  workers: 1\neval:\n  kmeans_restarts: 1\n",
		toolDataset(t, 5, 5, 5, 5), toolTinyCNN)
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestExportFromRunFolder: `pipeline export` writes an int8 variant without the mirror pass,
// reloaded, scored and timed beside the source backbone (the tiny CNN's Conv and pool run as int8
// kernels; its 3x3 Conv is rounded to nearest, error feedback being for 1x1 Convs); inspect shows
// the quantization; an
// existing file is kept unless --force.
func TestExportFromRunFolder(t *testing.T) {
	needORT(t)
	run := exportRunFolder(t)
	out := filepath.Join(t.TempDir(), "int8.onnx")
	r := toolRun("export", "--run", run, "--int8", "--reduce-range", "true", "--flip-tta=false", "--out", out, "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var res pipeline.FolderExportResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatal(err)
	}
	v := res.Variant
	if v.Path != out || !v.Int8 || v.FlipTTA || !v.ReduceRange || v.Calibration != "percentile" || !v.BiasCorrected || v.WeightRounding != "nearest" || v.Int8Nodes != 2 || v.FloatConvs != 0 ||
		v.RecallAt1 <= 0 || v.ImagesPerS <= 0 || v.LatencyMS <= 0 || res.SourceBackboneImagesPerS <= 0 {
		t.Fatalf("result %+v", res)
	}
	// 10 calibration images only: said.
	if !strings.Contains(r.stderr, "calibrating on 10 images only") {
		t.Errorf("no warning about the small calibration set: %s", r.stderr)
	}
	r = toolRun("inspect", out)
	if r.code != 0 || !strings.Contains(r.stdout, "int8: yes (qdq_int8, int8 symmetric per-channel [-64,64], reduce range") ||
		!strings.Contains(r.stdout, "bias-corrected features") || !strings.Contains(r.stdout, "flip_tta = false") {
		t.Fatalf("inspect: %d %s %s", r.code, r.stdout, r.stderr)
	}
	before, _ := os.ReadFile(out)
	if r = toolRun("export", "--run", run, "--out", out); r.code != 2 || !strings.Contains(r.stderr, "exists") {
		t.Fatalf("existing --out: %d %s", r.code, r.stderr)
	}
	if after, _ := os.ReadFile(out); string(after) != string(before) {
		t.Fatal("a refused export changed the existing file")
	}
	if r = toolRun("export", "--run", run, "--out", out, "--force"); r.code != 0 {
		t.Fatalf("--force: %d %s", r.code, r.stderr)
	}
	r = toolRun("export", "--run", run, "--int8", "--bias-correction", "false", "--out", out, "--force", "--json")
	var off pipeline.FolderExportResult
	if err := json.Unmarshal([]byte(r.stdout), &off); r.code != 0 || err != nil || !off.Variant.Int8 || off.Variant.BiasCorrected {
		t.Fatalf("--bias-correction false: exit %d, %+v (%v) %s", r.code, off.Variant, err, r.stderr)
	}
}

// TestExportBadUsage: missing or contradictory flags and a folder that is no run folder exit 2
// with a message naming the flag or file, and nothing is written.
func TestExportBadUsage(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x.onnx")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"export", "--out", out}, 2, "needs --run"},
		{[]string{"export", "--run", dir}, 2, "--out FILE"},
		{[]string{"export", "--run", dir, "--out", out, "--calibration", "entropy"}, 2, "go with --int8"},
		{[]string{"export", "--run", dir, "--out", out, "--int8", "--calibration", "mean"}, 2, "--calibration \"mean\""},
		{[]string{"export", "--run", dir, "--out", out, "--int8", "--reduce-range", "maybe"}, 2, "--reduce-range \"maybe\""},
		{[]string{"export", "--run", dir, "--out", out, "--bias-correction", "false"}, 2, "go with --int8"},
		{[]string{"export", "--run", dir, "--out", out, "--int8", "--bias-correction", "yes"}, 2, "--bias-correction \"yes\""},
		{[]string{"export", "--run", dir, "--out", out, "--weight-rounding", "gptq"}, 2, "go with --int8"},
		{[]string{"export", "--run", dir, "--out", out, "--int8", "--weight-rounding", "up"}, 2, "--weight-rounding \"up\""},
		{[]string{"export", "--run", dir, "--out", filepath.Join(dir, "model.onnx")}, 2, "the run's own model.onnx"},
		{[]string{"export", "--run", dir, "--out", out}, 2, "is not a run folder of `pipeline run`: no model.onnx"},
	} {
		r := toolRun(tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a failed export wrote its file")
	}
}
