package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline"
)

// The tests of this file interrupt `pipeline run` for real: the run is a child process (this
// test binary re-executed into TestResumeChildProcess, which calls run(args) and exits with its
// code), killed with SIGKILL or SIGTERM at a chosen step, then continued with
// `pipeline run --resume RUN_DIR`; the result must equal an uninterrupted run's exactly.

// TestResumeChildProcess is not a test: it is the child process of the kill tests.
func TestResumeChildProcess(t *testing.T) {
	args := os.Getenv("PIPELINE_TEST_CHILD_ARGS")
	if args == "" {
		t.Skip("the child process of the kill tests (runs only under them)")
	}
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil {
		t.Fatal(err)
	}
	os.Exit(run(argv, os.Stdout, os.Stderr))
}

// child is a `pipeline` child process; done is closed when it has exited.
type child struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startChild starts `pipeline <args>` in a child process, its output going to log.
func startChild(t *testing.T, log string, args ...string) *child {
	t.Helper()
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	cmd := exec.Command(os.Args[0], "-test.run=^TestResumeChildProcess$", "-test.count=1")
	argv, _ := json.Marshal(args)
	cmd.Env = append(os.Environ(), "PIPELINE_TEST_CHILD_ARGS="+string(argv))
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, log: log, done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-c.done })
	return c
}

// waitFor polls until cond holds, failing the test if the child exits first or after ten
// minutes. The child gets there by itself or ends; how long it takes depends on the machine's load
// (a 60-epoch run took 20 minutes at load average 30), so the bound only stops a child that hangs.
func waitFor(t *testing.T, c *child, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for !cond() {
		select {
		case <-c.done:
			out, _ := os.ReadFile(c.log)
			t.Fatalf("the run ended (%v) before %s:\n%s", c.cmd.ProcessState, what, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after ten minutes", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// killChild sends sig and waits for the child to exit; it returns the exit code (-1 if killed by
// the signal).
func killChild(t *testing.T, c *child, sig syscall.Signal) int {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	<-c.done
	return c.cmd.ProcessState.ExitCode()
}

// lastEpoch returns the epoch saved in dir/last.ckpt, or -1.
func lastEpoch(dir string) int {
	c, err := pipeline.LoadCheckpoint(filepath.Join(dir, "last.ckpt"))
	if err != nil {
		return -1
	}
	return c.Epoch
}

// resumeManifest writes a manifest of the first per images of the first classes CUB-100 classes.
func resumeManifest(t *testing.T, _ string, classes, per int) string {
	return testenv.SmallCUB(t, classes, per)
}

// comparable returns metrics.json of dir without what legitimately differs between an
// interrupted and an uninterrupted run (timings, paths, the resume marker, warnings, whether the
// tail's activations came from the cache).
func comparable(t *testing.T, dir string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"timing", "run_dir", "report", "machine", "warnings"} {
		delete(m, k)
	}
	ex := m["export"].(map[string]any)
	ex["path"] = ""
	delete(ex, "source_backbone_images_per_s") // timings
	if vs, ok := ex["variants"].([]any); ok {
		for _, v := range vs {
			v := v.(map[string]any)
			v["path"] = filepath.Base(v["path"].(string))
			delete(v, "images_per_s")
			delete(v, "latency_ms")
		}
	}
	if ts, ok := m["tail"].(map[string]any); ok { // activations: extracted, or from the cache
		delete(ts, "activation_cache_hit")
		delete(ts, "activation_cache") // a path: the extraction case uses its own cache folder
		delete(ts, "activation_seconds")
		delete(ts, "activations_with_features")
	}
	tr := m["training"].(map[string]any)
	delete(tr, "resumed_from_epoch")
	for _, h := range tr["history"].([]any) {
		delete(h.(map[string]any), "seconds")
	}
	return m
}

// sameRun checks that the run in dir ended as the uninterrupted reference: status ok, equal
// metrics, history and model selection, byte-identical model.onnx, and no last.ckpt left.
func sameRun(t *testing.T, ref, dir string) {
	t.Helper()
	got, want := comparable(t, dir), comparable(t, ref)
	if got["status"] != "ok" {
		t.Fatalf("resumed run status %v: %v", got["status"], got["error"])
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", " ")
		w, _ := json.MarshalIndent(want, "", " ")
		t.Fatalf("resumed run differs from the uninterrupted one:\n%s\n---\n%s", g, w)
	}
	a, err := os.ReadFile(filepath.Join(ref, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("resumed run exported a different model.onnx")
	}
	if _, err := os.Stat(filepath.Join(dir, "last.ckpt")); err == nil {
		t.Error("last.ckpt left in a finished run folder")
	}
	checkRunFolderComplete(t, dir)
}

const resumeConfig = `validation_classes: 1
threads: 1
head:
  embedding_dim: 32
  init: random
sampler:
  args: {classes_per_batch: 3, samples_per_class: 4}
optimizer:
  epochs: %d
  args: {lr: 0.0002}
  lr_schedule: {args: {steps: [%d]}}
preprocess:
  workers: 2
eval:
  kmeans_restarts: 2
`

// TestRunKillResume interrupts runs on 10 CUB-100 classes x 16 images (5 trained on, 1 of them
// for validation; 5 evaluated) at each step and resumes them: kill -9 and SIGTERM during
// training, kill -9 during extraction (the feature cache is rebuilt; a torn cache file is
// refused by its checksum and rebuilt too) and kill -9 during export. Every resumed run must end
// with the metrics, history, model selection and model.onnx bytes of the uninterrupted run.
func TestRunKillResume(t *testing.T) {
	slowEndToEnd(t)
	model := badSharedModel(t)
	needORT(t)
	shared := filepath.Dir(filepath.Dir(model))
	tmp := t.TempDir()
	const epochs = 60
	cfgPath := badWrite(t, filepath.Join(tmp, "cfg.yaml"), fmt.Sprintf(resumeConfig, epochs, epochs/2))
	manifest := resumeManifest(t, shared, 10, 16)
	cache := filepath.Join(tmp, "cache")
	common := []string{"run", "--config", cfgPath, "--data", manifest, "--backbone", model, "--cache", cache}
	args := func(out string, extra ...string) []string {
		return append(append(append([]string(nil), common...), "--out", out), extra...)
	}

	ref := filepath.Join(tmp, "ref")
	t0 := time.Now()
	if r := badRun(args(ref)[1:]...); r.code != 0 {
		t.Fatalf("reference run: exit %d\n%s", r.code, r.stderr)
	}
	var refSum struct{ Timing map[string]any }
	raw, _ := os.ReadFile(filepath.Join(ref, "metrics.json"))
	json.Unmarshal(raw, &refSum)
	t.Logf("uninterrupted run: %.1fs %v", time.Since(t0).Seconds(), refSum.Timing)

	resume := func(t *testing.T, dir string) {
		t.Helper()
		r := badRun("--resume", dir)
		if r.code != 0 {
			t.Fatalf("resume: exit %d\n%s", r.code, r.stderr)
		}
		sameRun(t, ref, dir)
	}

	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run("training "+sig.String(), func(t *testing.T) {
			dir := filepath.Join(tmp, "train-"+strconv.Itoa(int(sig)))
			c := startChild(t, dir+".log", args(dir)...)
			waitFor(t, c, "epoch 3 in last.ckpt", func() bool { return lastEpoch(dir) >= 3 })
			code := killChild(t, c, sig)
			at := lastEpoch(dir)
			if at >= epochs {
				t.Fatalf("training ended before the signal (raise the epochs)")
			}
			if sig == syscall.SIGTERM {
				m := checkRunFolderComplete(t, dir)
				if code != 130 || m["status"] != "interrupted" {
					t.Fatalf("SIGTERM: exit %d, metrics.json status %v; want 130, interrupted", code, m["status"])
				}
			}
			t.Logf("%v after epoch %d of %d: exit %d", sig, at, epochs, code)
			resume(t, dir)
			m := map[string]any{}
			raw, _ := os.ReadFile(filepath.Join(dir, "metrics.json"))
			json.Unmarshal(raw, &m)
			if got := m["training"].(map[string]any)["resumed_from_epoch"]; got != float64(at) {
				t.Errorf("resumed_from_epoch %v, want %d", got, at)
			}
		})
	}

	t.Run("extraction SIGKILL", func(t *testing.T) {
		dir := filepath.Join(tmp, "extract")
		ownCache := filepath.Join(tmp, "cache-extract")
		c := startChild(t, dir+".log", args(dir, "--cache", ownCache)...)
		waitFor(t, c, "config.yaml (extraction starts)", func() bool {
			_, err := os.Stat(filepath.Join(dir, "config.yaml"))
			return err == nil
		})
		time.Sleep(300 * time.Millisecond)
		killChild(t, c, syscall.SIGKILL)
		if lastEpoch(dir) >= 0 {
			t.Fatal("killed after extraction (training had started)")
		}
		feats, _ := filepath.Glob(filepath.Join(ownCache, "*.feat"))
		if len(feats) != 0 {
			t.Fatalf("a cache file exists after a kill during extraction: %v", feats)
		}
		// A torn cache file (as a crash of a non-atomic writer would leave) is refused by its
		// checksum and extracted again.
		refFeats, _ := filepath.Glob(filepath.Join(cache, "*.feat"))
		if len(refFeats) != 1 {
			t.Fatalf("reference cache holds %v", refFeats)
		}
		whole, err := os.ReadFile(refFeats[0])
		if err != nil {
			t.Fatal(err)
		}
		badWrite(t, filepath.Join(ownCache, filepath.Base(refFeats[0])), string(whole[:len(whole)/2]))
		r := badRun("--resume", dir, "-v")
		if r.code != 0 {
			t.Fatalf("resume: exit %d\n%s", r.code, r.stderr)
		}
		if !strings.Contains(r.stderr, "feature cache unusable, extracting again") {
			t.Errorf("the torn cache file was not reported:\n%s", r.stderr)
		}
		sameRun(t, ref, dir)
		var m struct{ Timing map[string]any }
		raw, _ := os.ReadFile(filepath.Join(dir, "metrics.json"))
		json.Unmarshal(raw, &m)
		if m.Timing["feature_cache_hit"] != false {
			t.Error("the resumed run used the torn cache")
		}
	})

	t.Run("export SIGKILL", func(t *testing.T) {
		dir := filepath.Join(tmp, "export")
		c := startChild(t, dir+".log", args(dir)...)
		waitFor(t, c, "model.onnx", func() bool {
			_, err := os.Stat(filepath.Join(dir, "model.onnx"))
			return err == nil
		})
		killChild(t, c, syscall.SIGKILL)
		if _, err := os.Stat(filepath.Join(dir, "metrics.json")); err == nil {
			t.Fatal("killed after the run finished")
		}
		if at := lastEpoch(dir); at != epochs {
			t.Fatalf("last.ckpt at epoch %d during export, want %d", at, epochs)
		}
		resume(t, dir)
	})

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--resume", ref}, "finished (metrics.json says status ok)"},
			{[]string{"--resume", filepath.Join(tmp, "nope")}, "no such file"},
			{[]string{"--resume", cache}, "has no config.yaml"},
			{[]string{"--resume", ref, "--epochs", "3", "--seed", "2"}, "--epochs, --seed cannot be changed when resuming"},
		} {
			r := badRun(tc.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("%v: exit %d, stderr %q; want 2 saying %q", tc.args, r.code, r.stderr, tc.want)
			}
		}
		// A last.ckpt written under another config is refused, not silently mixed in.
		other := filepath.Join(tmp, "other")
		c := startChild(t, other+".log", args(other)...)
		waitFor(t, c, "epoch 1 in last.ckpt", func() bool { return lastEpoch(other) >= 1 })
		killChild(t, c, syscall.SIGKILL)
		cfg, err := os.ReadFile(filepath.Join(other, "config.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		badWrite(t, filepath.Join(other, "config.yaml"), strings.Replace(string(cfg), "seed: 1", "seed: 7", 1))
		r := badRun("--resume", other)
		if r.code != 2 || !strings.Contains(r.stderr, "was written under a config other than") {
			t.Errorf("changed config: exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

// TestRunKillResumeInit: the same with the PCA embedding and class-mean classifier
// initializations (which a resumed run skips: its parameters come from last.ckpt), on the tiny
// float backbone of nonfinite_test.go, killed with SIGKILL after epoch 5 of 200.
func TestRunKillResumeInit(t *testing.T) {
	needORT(t)
	dir := t.TempDir()
	manifest := badDataset(t, filepath.Join(dir, "data"), []int{8, 8, 8, 8, 8})
	const epochs = 200
	cfg := badWrite(t, filepath.Join(dir, "cfg.yaml"), strings.Replace(pointwiseConfig, "init: random", "init: pca\n  classifier_init: means", 1)+
		fmt.Sprintf("optimizer:\n  epochs: %d\n  args: {lr: 0.001}\n  lr_schedule: {args: {steps: [100]}}\n", epochs))
	args := func(out string) []string {
		return []string{"run", "--config", cfg, "--data", manifest, "--backbone", pointwiseModel(t, dir, "Relu"),
			"--cache", filepath.Join(dir, "cache"), "--train-classes", "4", "--out", out}
	}
	ref := filepath.Join(dir, "ref")
	if r := badRun(args(ref)[1:]...); r.code != 0 {
		t.Fatalf("reference run: exit %d\n%s", r.code, r.stderr)
	}
	out := filepath.Join(dir, "killed")
	c := startChild(t, out+".log", args(out)...)
	waitFor(t, c, "epoch 5 in last.ckpt", func() bool { return lastEpoch(out) >= 5 })
	killChild(t, c, syscall.SIGKILL)
	at := lastEpoch(out)
	if at >= epochs {
		t.Fatal("training ended before the kill (raise the epochs)")
	}
	t.Logf("killed after epoch %d of %d", at, epochs)
	if r := badRun("--resume", out); r.code != 0 {
		t.Fatalf("resume: exit %d\n%s", r.code, r.stderr)
	}
	sameRun(t, ref, out)
}

// TestRunKillResumeTail: the same for tail fine-tuning (--train-blocks 1 on the float two-block
// backbone pipeline/testdata/tiny_blocks.onnx, PCA and class-mean initializations, model
// selection on a validation class, an lr step at epoch 50), killed with SIGKILL or SIGTERM after
// epoch 3 of 100: the resumed run (activations from the cache, tail and head parameters and both
// optimizer states from last.ckpt) must end with the metrics, history, model selection and
// model.onnx bytes of the uninterrupted run.
func TestRunKillResumeTail(t *testing.T) {
	needORT(t)
	dir := t.TempDir()
	manifest := badDataset(t, filepath.Join(dir, "data"), []int{8, 8, 8, 8, 8})
	const epochs = 100
	cfg := badWrite(t, filepath.Join(dir, "cfg.yaml"), strings.Replace(pointwiseConfig, "init: random", "init: pca\n  classifier_init: means", 1)+
		fmt.Sprintf("optimizer:\n  epochs: %d\n  args: {lr: 0.001}\n  lr_schedule: {args: {steps: [50]}}\n", epochs))
	args := func(out string) []string {
		return []string{"run", "--config", cfg, "--data", manifest, "--backbone", filepath.Join("..", "..", "pipeline", "testdata", "tiny_blocks.onnx"),
			"--train-blocks", "1", "--cache", filepath.Join(dir, "cache"), "--train-classes", "4", "--out", out}
	}
	ref := filepath.Join(dir, "ref")
	t0 := time.Now()
	if r := badRun(args(ref)[1:]...); r.code != 0 {
		t.Fatalf("reference run: exit %d\n%s", r.code, r.stderr)
	}
	t.Logf("uninterrupted run: %.1fs", time.Since(t0).Seconds())
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			out := filepath.Join(dir, "killed-"+strconv.Itoa(int(sig)))
			c := startChild(t, out+".log", args(out)...)
			waitFor(t, c, "epoch 3 in last.ckpt", func() bool { return lastEpoch(out) >= 3 })
			code := killChild(t, c, sig)
			at := lastEpoch(out)
			if at >= epochs {
				t.Fatal("training ended before the signal (raise the epochs)")
			}
			if sig == syscall.SIGTERM {
				if m := checkRunFolderComplete(t, out); code != 130 || m["status"] != "interrupted" {
					t.Fatalf("SIGTERM: exit %d, metrics.json status %v; want 130, interrupted", code, m["status"])
				}
			}
			last, err := pipeline.LoadCheckpoint(filepath.Join(out, "last.ckpt"))
			if err != nil {
				t.Fatal(err)
			}
			backbone := 0
			for _, p := range last.Params {
				if strings.HasPrefix(p.Name, "backbone/") {
					backbone++
				}
			}
			if backbone != 8 { // the 3 Convs of the last block and the final Conv, weights and biases
				t.Errorf("last.ckpt holds %d backbone tensors, want 8", backbone)
			}
			t.Logf("%v after epoch %d of %d: exit %d", sig, at, epochs, code)
			if r := badRun("--resume", out); r.code != 0 {
				t.Fatalf("resume: exit %d\n%s", r.code, r.stderr)
			}
			sameRun(t, ref, out)
			m := checkRunFolderComplete(t, out)
			if got := m["training"].(map[string]any)["resumed_from_epoch"]; got != float64(at) {
				t.Errorf("resumed_from_epoch %v, want %d", got, at)
			}
			if hit := m["tail"].(map[string]any)["activation_cache_hit"]; hit != true {
				t.Errorf("the resumed run extracted the activations again (activation_cache_hit %v)", hit)
			}
		})
	}
}

// slowEndToEnd skips t under -short. `make test` runs every test without -short first, then the
// whole suite again under the race detector with -short, where these minutes-long end-to-end
// runs on the real model would take 5-10 times as long; their concurrency (parallel decoding,
// the background checkpoint writer) is also exercised by the shorter runs on tiny models.
func slowEndToEnd(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end run on the real model: runs in make test's pass without -short")
	}
}
