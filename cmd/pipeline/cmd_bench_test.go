package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/config"
)

// sharedDir returns ../shared (or $PIPELINE_SHARED_DIR), with the default backbone in it, or skips
// the test.
func sharedDir(t *testing.T) string {
	t.Helper()
	testenv.Int8Model(t)
	return testenv.SharedDir(t)
}

// needORT fails the test when the onnxruntime library is missing (`make test` installs it).
func needORT(t *testing.T) { testenv.ORTLibrary(t) }

// TestBenchSmall runs `pipeline bench` on 8 images, a few head steps and one tail step (the
// default --tail-blocks 1 of the shared MobileNetV2) and checks the report.
func TestBenchSmall(t *testing.T) {
	shared := sharedDir(t)
	needORT(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "sub", "bench.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"bench", "--images", "8", "--batch", "3", "--rounds", "2", "--head-steps", "2", "--tail-steps", "1",
		"--data", filepath.Join(shared, "data", "cub100"),
		"--backbone", filepath.Join(shared, "models", "mobilenetv2-12-int8.onnx"), "--out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout %q, want nothing with --out", stdout.String())
	}
	js, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]any
	if err := json.Unmarshal(js, &top); err != nil {
		t.Fatalf("%v in %s", err, js)
	}
	rep := map[string]map[string]any{}
	for _, sec := range []string{"machine", "extract", "head", "tail"} {
		m, ok := top[sec].(map[string]any)
		if !ok {
			t.Fatalf("no %q object in %s", sec, js)
		}
		rep[sec] = m
	}
	if _, ok := top["reference"]; ok {
		t.Error("reference present without --reference-python")
	}
	if m := rep["machine"]; m["cpu"] == "" || m["cpu"] == nil || m["onnxruntime_version"] == "" || m["onnxruntime_version"] == nil {
		t.Errorf("machine %v: want cpu and onnxruntime_version", m)
	}
	positive := map[string][]string{
		"machine": {"cores"},
		"extract": {"pipeline_images_per_s", "bare_onnxruntime_images_per_s", "ratio", "decode_images_per_s",
			"bare_cpu_ms_per_image", "pipeline_cpu_ms_per_image"},
		"head": {"steps_per_s", "ms_per_step"},
		"tail": {"steps_per_s", "ms_per_step", "tail_params", "gomaxprocs"},
	}
	for sec, keys := range positive {
		for _, k := range keys {
			if v, ok := rep[sec][k].(float64); !ok || !(v > 0) {
				t.Errorf("%s.%s = %v, want a number > 0", sec, k, rep[sec][k])
			}
		}
	}
	ex := rep["extract"]
	if r, want := ex["best_ratio"].(float64), ex["pipeline_images_per_s"].(float64)/ex["bare_onnxruntime_images_per_s"].(float64); r != want {
		t.Errorf("best_ratio %v, want pipeline/bare = %v", r, want)
	}
	pr, br, rr := ex["pipeline_rounds_images_per_s"].([]any), ex["bare_rounds_images_per_s"].([]any), ex["round_ratios"].([]any)
	if len(rr) != 2 || len(pr) != 2 || len(br) != 2 {
		t.Fatalf("round_ratios %v, pipeline rounds %v, bare rounds %v: want 2 of each", rr, pr, br)
	}
	for i := range rr {
		if rr[i].(float64) != pr[i].(float64)/br[i].(float64) {
			t.Errorf("round_ratios[%d] = %v, want %v / %v", i, rr[i], pr[i], br[i])
		}
	}
	if r, want := ex["ratio"].(float64), (rr[0].(float64)+rr[1].(float64))/2; r != want {
		t.Errorf("ratio %v, want the median of the round ratios %v", r, want)
	}
	for k, want := range map[string]float64{"images": 8, "batch": 3, "rounds": 2} {
		if ex[k] != want {
			t.Errorf("extract.%s = %v, want %v", k, ex[k], want)
		}
	}
	for _, k := range []string{"pipeline_rounds_images_per_s", "bare_rounds_images_per_s"} {
		if v, _ := ex[k].([]any); len(v) != 2 {
			t.Errorf("extract.%s = %v, want 2 rounds", k, ex[k])
		}
	}
	for k, want := range map[string]float64{"batch": 54, "in": 1280, "emb": 512, "classes": 50, "steps": 2} {
		if rep["head"][k] != want {
			t.Errorf("head.%s = %v, want %v", k, rep["head"][k], want)
		}
	}
	tail := rep["tail"]
	for k, want := range map[string]any{"train_blocks": 1.0, "from": "452_quantized", "to": "464_quantized", "features": 1280.0,
		"batch": 54.0, "classes": 40.0, "emb": 512.0, "optimizer": "radam", "loss": "group", "steps": 1.0, "warmup_steps": 2.0} {
		if tail[k] != want {
			t.Errorf("tail.%s = %v, want %v", k, tail[k], want)
		}
	}
	if s := fmt.Sprint(tail["activation_shape"]); s != "[160 7 7]" {
		t.Errorf("tail.activation_shape = %s, want [160 7 7]", s)
	}
	if _, ok := tail["reference"]; ok {
		t.Error("tail.reference present without --reference-python")
	}
	ents, _ := os.ReadDir(filepath.Dir(out))
	if len(ents) != 1 {
		t.Errorf("output folder holds %d entries, want only bench.json (no temporary file left)", len(ents))
	}
}

func TestBenchUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--images", "0"},
		{"bench", "--head-steps", "-1"},
		{"bench", "--tail-steps", "0"},
		{"bench", "--tail-blocks", "-1"},
		{"bench", "--no-such-flag"},
		{"bench", "extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, stderr.String())
		}
	}
}

// TestBenchReferenceParse runs benchReference with a stand-in script that prints what
// scripts/bench_ref_head.py prints, and one that prints nothing usable.
func TestBenchReferenceParse(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	script := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := script("good.sh", `echo "torch warning on stdout"
echo '{"steps_per_s": 10, "ms_per_step": 100, "steps": 150, "args": "'"$*"'"}'
`)
	bad := script("bad.sh", "echo oops; echo 'Traceback: boom' >&2; exit 1\n")
	zero := script("zero.sh", "echo '{\"steps_per_s\": 0}'\n")

	ref, err := benchReference(context.Background(), benchOptions{refPython: sh, refScript: good, refEpochs: 2}, 25)
	if err != nil {
		t.Fatal(err)
	}
	if ref.StepsPerS != 10 || ref.MsPerStep != 100 || ref.Speedup != 2.5 || !ref.MeetsGoal {
		t.Errorf("got %+v, want 10 steps/s, 100 ms, speedup 2.5, meets goal", ref)
	}
	if args, _ := ref.Raw["args"].(string); !strings.Contains(args, "--epochs 2") || !strings.Contains(args, "ref_heads.py") {
		t.Errorf("script arguments %q, want --ref .../ref_heads.py --epochs 2", args)
	}
	if ref, err := benchReference(context.Background(), benchOptions{refPython: sh, refScript: good, refEpochs: 1}, 5); err != nil || ref.MeetsGoal {
		t.Errorf("5 vs 10 steps/s: %+v, %v; want not meeting the goal", ref, err)
	}
	if _, err := benchReference(context.Background(), benchOptions{refPython: sh, refScript: bad, refEpochs: 1}, 5); err == nil ||
		!strings.Contains(err.Error(), "Traceback: boom") {
		t.Errorf("failing script: err %v, want it to carry the script's stderr", err)
	}
	if _, err := benchReference(context.Background(), benchOptions{refPython: sh, refScript: zero, refEpochs: 1}, 5); err == nil {
		t.Error("script reporting 0 steps/s: want an error")
	}
}

// TestBenchReferenceTorch times the real PyTorch reference for one epoch (skipped with -short or
// without /usr/bin/python3 with torch and sklearn).
func TestBenchReferenceTorch(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	shared := sharedDir(t)
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch, sklearn").Run(); err != nil {
		t.Skipf("%s cannot import torch and sklearn (%v): install python3-torch and python3-sklearn", py, err)
	}
	t.Setenv("PIPELINE_SHARED_DIR", shared)
	ref, err := benchReference(context.Background(), benchOptions{refPython: py, refEpochs: 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !(ref.StepsPerS > 0) || ref.Raw["steps"] != float64(50) || ref.Raw["threads"] != float64(2) {
		t.Errorf("reference %+v: want steps/s > 0, 50 steps (one epoch of 50 classes x 59 samples), 2 threads", ref)
	}
}

// tinyBlocksModel is the float two-block backbone of the pipeline package's tail tests.
var tinyBlocksModel = filepath.Join("..", "..", "pipeline", "testdata", "tiny_blocks.onnx")

// tinyTailBench times one step of the tiny backbone's last k blocks (20-d features).
func tinyTailBench(t *testing.T, k int) (*pipeline.TailBench, config.Config) {
	t.Helper()
	cfg := config.DefaultConfig()
	cfg.Backbone.Path, cfg.Backbone.TrainBlocks, cfg.Threads = tinyBlocksModel, k, 1
	tb, err := pipeline.BenchTail(context.Background(), cfg, benchTailClasses, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	return tb, cfg
}

// TestBenchTailReferenceParse runs benchTailReference with stand-in scripts: one printing what
// scripts/bench_ref_tail.py prints, one exiting with the missing-module code (the reference is
// skipped, saying why), one whose tail output differs from ours (an error: it timed another
// tail), one failing.
func TestBenchTailReferenceParse(t *testing.T) {
	needORT(t)
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	tb, cfg := tinyTailBench(t, 1)
	dir := t.TempDir()
	script := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The good script checks that the spec names the files it needs and that they exist.
	good := script("good.sh", `spec=$2
for k in model input output; do
  f=$(sed 's/.*"'$k'":"\([^"]*\)".*/\1/' "$spec"); test -s "$f" || { echo "no $k file $f" >&2; exit 1; }
done
echo "torch warning on stdout"
echo '{"ms_per_step": 50, "forward_max_abs_diff": 1e-7, "threads": 2, "torch_version": "x"}'
`)
	missing := script("missing.sh", "echo \"bench_ref_tail: No module named 'onnx'\" >&2; exit 3\n")
	other := script("other.sh", `echo '{"ms_per_step": 50, "forward_max_abs_diff": 0.5}'`+"\n")
	bad := script("bad.sh", "echo 'Traceback: boom' >&2; exit 1\n")
	o := benchOptions{refPython: sh, tailSteps: 1}

	o.tailScript = good
	ref, skipped, err := benchTailReference(context.Background(), o, cfg, tb)
	if err != nil || skipped != "" {
		t.Fatalf("good script: %v, skipped %q", err, skipped)
	}
	if ref.MsPerStep != 50 || ref.Ratio != tb.MsPerStep/50 || ref.MeetsGoal != (tb.MsPerStep <= 100) || ref.Threads != 2 || !(ref.ForwardMax > 0) {
		t.Errorf("got %+v (ours %.1f ms/step)", ref, tb.MsPerStep)
	}
	o.tailScript = missing
	if ref, skipped, err := benchTailReference(context.Background(), o, cfg, tb); err != nil || ref != nil || !strings.Contains(skipped, "No module named 'onnx'") {
		t.Errorf("missing module: %+v, %q, %v; want skipped naming the module", ref, skipped, err)
	}
	o.tailScript = other
	if _, _, err := benchTailReference(context.Background(), o, cfg, tb); err == nil || !strings.Contains(err.Error(), "computes another tail") {
		t.Errorf("another tail: err %v", err)
	}
	o.tailScript = bad
	if _, _, err := benchTailReference(context.Background(), o, cfg, tb); err == nil || !strings.Contains(err.Error(), "Traceback: boom") {
		t.Errorf("failing script: err %v, want it to carry the script's stderr", err)
	}
}

// TestBenchTailReferenceTorch runs scripts/bench_ref_tail.py for real on the tiny backbone's last
// two blocks (Conv, Clip, the residual Add, GlobalAveragePool): PyTorch's tail output on the batch must
// match ours (benchTailReference refuses a difference above 1e-3 of the largest value), with
// as many threads as GOMAXPROCS and the same trained values (skipped with -short or without
// /usr/bin/python3 with torch, onnx and sklearn).
func TestBenchTailReferenceTorch(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	needORT(t)
	shared := sharedDir(t)
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch, onnx, sklearn").Run(); err != nil {
		t.Skipf("%s cannot import torch, onnx and sklearn (%v): install python3-torch, python3-onnx and python3-sklearn", py, err)
	}
	t.Setenv("PIPELINE_SHARED_DIR", shared)
	for _, k := range []int{2} {
		tb, cfg := tinyTailBench(t, k)
		ref, skipped, err := benchTailReference(context.Background(), benchOptions{refPython: py, tailSteps: 2}, cfg, tb)
		if err != nil || skipped != "" {
			t.Fatalf("k=%d: %v (skipped %q)", k, err, skipped)
		}
		shapes, _ := ref.Raw["shapes"].(map[string]any)
		if !(ref.MsPerStep > 0) || ref.Threads != tb.Procs || shapes["tail_params"] != float64(tb.TailParams) || shapes["batch"] != float64(tb.Batch) {
			t.Errorf("k=%d: reference %+v; want ms > 0, %d threads, %d tail values, batch %d", k, ref, tb.Procs, tb.TailParams, tb.Batch)
		}
		t.Logf("k=%d: ours %.2f ms/step, PyTorch %.2f ms/step, forward max |diff| %.2g of %.2g, layers %v",
			k, tb.MsPerStep, ref.MsPerStep, ref.ForwardMaxDiff, ref.ForwardMax, shapes["tail_layers"])
	}
}

// TestBenchTailDepth checks which tail the bench times: the flag's without --config (whatever the
// run's default depth), the config's with --config, and the flag's when given with --config.
func TestBenchTailDepth(t *testing.T) {
	def := config.DefaultConfig().Backbone
	if def.TrainBlocks == 1 {
		t.Fatal("the default config trains one block: this test needs a default other than the bench's")
	}
	fromFile := def
	fromFile.TrainBlocks, fromFile.TrainableFrom = 0, "597_quantized"
	for _, c := range []struct {
		name      string
		in        config.BackboneConfig
		o         benchOptions
		blocks    int
		trainFrom string
	}{
		{"no config: the flag's default", def, benchOptions{tailBlocks: 1}, 1, ""},
		{"no config, flag given", def, benchOptions{tailBlocks: 2, tailBlocksSet: true}, 2, ""},
		{"config", fromFile, benchOptions{config: "c.yaml", tailBlocks: 1}, 0, "597_quantized"},
		{"config and flag", fromFile, benchOptions{config: "c.yaml", tailBlocks: 2, tailBlocksSet: true}, 2, ""},
		{"config without a tail", config.BackboneConfig{}, benchOptions{config: "c.yaml", tailBlocks: 1}, 1, ""},
	} {
		b := c.in
		benchTailDepth(&b, c.o)
		if b.TrainBlocks != c.blocks || b.TrainableFrom != c.trainFrom {
			t.Errorf("%s: train_blocks %d, trainable_from %q; want %d, %q", c.name, b.TrainBlocks, b.TrainableFrom, c.blocks, c.trainFrom)
		}
	}
}
