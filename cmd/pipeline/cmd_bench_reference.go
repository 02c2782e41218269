package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/npy"
)

// refTailMissingModule is the exit code of scripts/bench_ref_tail.py when the interpreter lacks
// a module it needs (torch, onnx, numpy).
const refTailMissingModule = 3

// benchTailReference runs scripts/bench_ref_tail.py with o.refPython on the float backbone, the
// batch and the settings of t and cfg, written to a temporary folder. skipped is set (and err nil)
// when the interpreter lacks a module.
func benchTailReference(ctx context.Context, o benchOptions, cfg config.Config, t *pipeline.TailBench) (ref *tailReference, skipped string, err error) {
	script, err := referenceScript(o.tailScript, "bench_ref_tail.py", "reference-tail-script")
	if err != nil {
		return nil, "", err
	}
	dir, err := os.MkdirTemp("", "bench-tail-")
	if err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	in := len(t.Input) / t.Batch
	spec := map[string]any{
		"model": filepath.Join(dir, "float.onnx"), "from": t.From, "to": t.To, "shape": t.ActivationShape,
		"input": filepath.Join(dir, "input.npy"), "output": filepath.Join(dir, "output.npy"),
		"labels": t.Labels, "classes": t.Classes, "emb": t.Emb,
		"normalize": cfg.Head.Normalize, "center": cfg.Head.Center,
		"optimizer": cfg.Optimizer.Name, "lr": cfg.Optimizer.LR, "backbone_lr": cfg.Backbone.LR,
		"weight_decay": cfg.Optimizer.WeightDecay,
		"temperature":  cfg.Loss.Temperature, "iterations": cfg.Loss.Iterations, "scaling": cfg.Loss.Scaling,
		"anchors_per_class": cfg.Loss.AnchorsPerClass,
		"steps":             o.tailSteps, "warmup": benchTailWarmup, "threads": t.Procs,
		"ref": refHeadsPath(),
	}
	if err := onnxpb.SaveAtomic(spec["model"].(string), t.Float); err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	if err := npy.Write(spec["input"].(string), t.Input, t.Batch, in); err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	if err := npy.Write(spec["output"].(string), t.Output, t.Batch, t.Features); err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	specPath := filepath.Join(dir, "spec.json")
	if err := os.WriteFile(specPath, js, 0o644); err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	raw, stderr, err := runReference(ctx, o.refPython, script, "--spec", specPath)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == refTailMissingModule {
			return nil, strings.TrimSpace(tail(stderr, 500)), nil
		}
		return nil, "", err
	}
	ms, _ := raw["ms_per_step"].(float64)
	diff, okDiff := raw["forward_max_abs_diff"].(float64)
	threads, _ := raw["threads"].(float64)
	cpu, _ := raw["cpu_ms_per_step"].(float64)
	if !(ms > 0) || !okDiff {
		return nil, "", fmt.Errorf("bench: reference %q: bad ms_per_step %v / forward_max_abs_diff %v", script, raw["ms_per_step"], raw["forward_max_abs_diff"])
	}
	ref = &tailReference{Python: o.refPython, Script: script, MsPerStep: ms, StepsPerS: 1000 / ms, CPUMsPerStep: cpu, Threads: int(threads),
		Ratio: t.MsPerStep / ms, ForwardMaxDiff: diff, Raw: raw}
	ref.MeetsGoal = ref.Ratio <= 2
	for _, v := range t.Output {
		ref.ForwardMax = math.Max(ref.ForwardMax, math.Abs(float64(v)))
	}
	if !(diff <= 1e-3*ref.ForwardMax) {
		return nil, "", fmt.Errorf("bench: reference %q computes another tail: its output differs from ours by up to %g (ours up to %g)", script, diff, ref.ForwardMax)
	}
	return ref, "", nil
}

// refHeadsPath is the absolute path of ../shared/reference/ref_heads.py.
func refHeadsPath() string {
	ref := filepath.Join(config.SharedDir(), "reference", "ref_heads.py")
	if abs, err := filepath.Abs(ref); err == nil {
		ref = abs
	}
	return ref
}

// benchReference runs scripts/bench_ref_head.py with o.refPython and parses its JSON line.
func benchReference(ctx context.Context, o benchOptions, ours float64) (*referenceBench, error) {
	script, err := referenceScript(o.refScript, "bench_ref_head.py", "reference-script")
	if err != nil {
		return nil, err
	}
	raw, _, err := runReference(ctx, o.refPython, script, "--ref", refHeadsPath(), "--epochs", fmt.Sprint(o.refEpochs))
	if err != nil {
		return nil, err
	}
	sps, _ := raw["steps_per_s"].(float64)
	ms, _ := raw["ms_per_step"].(float64)
	if !(sps > 0) || !(ms > 0) {
		return nil, fmt.Errorf("bench: reference %q: bad steps_per_s %v / ms_per_step %v", script, raw["steps_per_s"], raw["ms_per_step"])
	}
	return &referenceBench{Python: o.refPython, Script: script, StepsPerS: sps, MsPerStep: ms,
		Speedup: ours / sps, MeetsGoal: ours >= sps, Raw: raw}, nil
}

// referenceScript returns the reference script flagValue, or by default scripts/name of the
// repository.
func referenceScript(flagValue, name, flagName string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if p := findRepoFile(filepath.Join("scripts", name)); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("bench: scripts/%s not found above the working directory or the executable; pass --%s", name, flagName)
}

// runReference runs `python script args...` and returns the JSON object on the last line of its
// stdout, and its stderr. A script that fails is an error that wraps its *exec.ExitError and
// quotes the end of its stderr.
func runReference(ctx context.Context, python, script string, args ...string) (raw map[string]any, stderr string, err error) {
	cmd := exec.CommandContext(ctx, python, append([]string{script}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return nil, errOut.String(), fmt.Errorf("bench: reference %q %q: %w\n%s", python, script, err, tail(errOut.String(), 2000))
	}
	lines := bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
	if err := json.Unmarshal(lines[len(lines)-1], &raw); err != nil {
		return nil, errOut.String(), fmt.Errorf("bench: reference %q printed no JSON line: %w\n%s", script, err, tail(out.String(), 2000))
	}
	return raw, errOut.String(), nil
}

// findRepoFile returns rel under the first folder holding go.mod at or above the working
// directory or the executable's directory, or "".
func findRepoFile(rel string) string {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, dir := range starts {
		for ; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				if p := filepath.Join(dir, rel); fileExists(p) {
					return p
				}
				break
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	return ""
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// tail returns the last max bytes of s.
func tail(s string, max int) string {
	if len(s) > max {
		return "..." + s[len(s)-max:]
	}
	return s
}
