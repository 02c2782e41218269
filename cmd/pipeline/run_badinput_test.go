package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/config"
)

// The tests of this file run `pipeline run` end to end on bad input, through run(args, stdout,
// stderr), on datasets of tiny PNGs made in t.TempDir() and the shared int8 MobileNetV2. Each
// case checks the exit code, that stderr names the file / line / tensor / class and says what to
// do, that a failed run prints no results on stdout, and that every file left in the run folder
// is complete.

// badSharedModel returns the shared int8 model or skips the test.
func badSharedModel(t *testing.T) string { return testenv.Int8Model(t) }

func badWrite(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// badPNG writes a 24x24 PNG: the class colour plus noise.
func badPNG(t *testing.T, path string, class int, rng *rand.Rand) {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 24, 24))
	base := [3]int{(class * 97) % 256, (class*53 + 80) % 256, (class*151 + 160) % 256}
	for y := 0; y < 24; y++ {
		for x := 0; x < 24; x++ {
			var c [3]uint8
			for k := range c {
				c[k] = uint8(min(255, max(0, base[k]+rng.Intn(61)-30)))
			}
			img.Set(x, y, color.RGBA{c[0], c[1], c[2], 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	badWrite(t, path, b.String())
}

// badDataset writes per[c] PNGs of class c under dir/c<c>/ and returns a manifest of them
// (relative paths), plus extra lines appended verbatim.
func badDataset(t *testing.T, dir string, per []int, extra ...string) string {
	t.Helper()
	rng := rand.New(rand.NewSource(int64(len(per))))
	var b strings.Builder
	b.WriteString("path,label\n")
	for c, n := range per {
		for i := 0; i < n; i++ {
			rel := fmt.Sprintf("c%d/%d.png", c, i)
			badPNG(t, filepath.Join(dir, rel), c, rng)
			fmt.Fprintf(&b, "%s,%d\n", rel, c)
		}
	}
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	return badWrite(t, filepath.Join(dir, "manifest.csv"), b.String())
}

// tinyConfig keeps runs to about a second: 4-d random-init head, 1 epoch, 2x2 batches.
const tinyConfig = `validation_classes: 0
threads: 1
head:
  embedding_dim: 4
  init: random
sampler:
  args: {classes_per_batch: 2, samples_per_class: 2}
loss:
  name: group
  args: {anchors_per_class: 1}
optimizer:
  epochs: 1
  args: {lr: 0.0001}
backbone:
  batch_size: 8
  train_blocks: 0
preprocess:
  workers: 2
eval:
  kmeans_restarts: 1
`

type badResult struct {
	code           int
	stdout, stderr string
}

func badRun(args ...string) badResult {
	var out, errb bytes.Buffer
	code := run(append([]string{"run"}, args...), &out, &errb)
	return badResult{code, out.String(), errb.String()}
}

// checkRunFolderComplete asserts that every file in the run folder dir (if it exists) is complete:
// no temporary files, metrics.json and config.yaml parse, model.onnx and checkpoint.ckpt load.
// It returns the parsed metrics.json (nil if absent).
func checkRunFolderComplete(t *testing.T, dir string) map[string]any {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var metrics map[string]any
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.Contains(e.Name(), ".tmp"):
			t.Errorf("temporary file %s left in the run folder", p)
		case e.Name() == "metrics.json":
			if err := json.Unmarshal(raw, &metrics); err != nil {
				t.Errorf("metrics.json does not parse: %v", err)
			}
		case e.Name() == "config.yaml":
			var cfg config.Config
			dec := yaml.NewDecoder(bytes.NewReader(raw))
			dec.KnownFields(true)
			if err := dec.Decode(&cfg); err != nil {
				t.Errorf("config.yaml does not parse: %v", err)
			}
		case e.Name() == "model.onnx", e.Name() == "model-int8.onnx":
			if _, err := onnxpb.Unmarshal(raw, p); err != nil {
				t.Errorf("%s does not parse: %v", e.Name(), err)
			}
		case e.Name() == "checkpoint.ckpt", e.Name() == "last.ckpt":
			if _, err := pipeline.LoadCheckpoint(p); err != nil {
				t.Errorf("checkpoint: %v", err)
			}
		case e.Name() == "report.html":
			if !bytes.HasSuffix(raw, []byte("</html>\n")) {
				t.Errorf("report.html is not complete")
			}
		case e.Name() == "skipped_images.txt":
			if len(raw) == 0 || raw[len(raw)-1] != '\n' {
				t.Errorf("skipped_images.txt is not complete lines: %q", raw)
			}
		default:
			t.Errorf("unexpected file %s in the run folder", p)
		}
	}
	return metrics
}

func TestRunBadInput(t *testing.T) {
	dir := t.TempDir()
	cfg := badWrite(t, filepath.Join(dir, "tiny.yaml"), tinyConfig)
	// No sampler settings: the default 6 classes x 9 samples must shrink for this data.
	cfgDefaultBatch := badWrite(t, filepath.Join(dir, "defaultbatch.yaml"),
		strings.Replace(strings.Replace(tinyConfig, "  args: {classes_per_batch: 2, samples_per_class: 2}\n", "  {}\n", 1),
			"  args: {anchors_per_class: 1}\n", "  args: {anchors_per_class: 2}\n", 1))
	cfgUnknown := badWrite(t, filepath.Join(dir, "unknown.yaml"), "seed: 3\nhead:\n  embeding_dim: 8\n")
	cfgWrongType := badWrite(t, filepath.Join(dir, "wrongtype.yaml"), "seed: 3\noptimizer:\n  epochs: many\n")
	cfgBadPolicy := badWrite(t, filepath.Join(dir, "policy.yaml"), "on_bad_image: ignore\n")
	good := badDataset(t, filepath.Join(dir, "good"), []int{3, 3, 3, 3})
	notImage := badWrite(t, filepath.Join(dir, "bad", "c3", "notimage.jpg"), "this is text, not a JPEG\n")
	withBad := badDataset(t, filepath.Join(dir, "bad"), []int{3, 3, 3, 3}, "c3/notimage.jpg,3")
	// The bad image is one of the two of training class 0: skipping it leaves that class one image.
	badWrite(t, filepath.Join(dir, "bad0", "c0", "notimage.jpg"), "this is text, not a JPEG\n")
	withBadTrain := badDataset(t, filepath.Join(dir, "bad0"), []int{1, 3, 3, 3}, "c0/notimage.jpg,0")
	single := badDataset(t, filepath.Join(dir, "single"), []int{3, 1, 3, 3})
	three := badDataset(t, filepath.Join(dir, "three"), []int{3, 3, 3})
	missingField := badWrite(t, filepath.Join(dir, "csv", "missing.csv"), "path,label\na.png,0\nb.png\n")
	badLabel := badWrite(t, filepath.Join(dir, "csv", "badlabel.csv"), "path,label\na.png,0\nb.png,1\nc.png,-2\n")
	noData := filepath.Join(dir, "nodata", "manifest.csv")
	noModel := filepath.Join(dir, "models", "missing.onnx")

	models := filepath.Join(dir, "models")
	randomModel := filepath.Join(models, "random.onnx")
	truncModel := filepath.Join(models, "truncated.onnx")
	model := "" // the shared model, set by cases that need it
	rng := rand.New(rand.NewSource(7))
	junk := make([]byte, 1<<16)
	rng.Read(junk)
	badWrite(t, randomModel, string(junk))

	cache := filepath.Join(dir, "cache")
	type needs int
	const (
		nothing   needs = iota // fails before onnxruntime is touched
		sharedORT              // needs the shared model and onnxruntime
	)
	cases := []struct {
		name  string
		needs needs
		args  func() []string
		code  int
		want  []string // substrings of stderr: the file / line / tensor / class
		hint  string   // substring of stderr saying what to do
		ok    func(t *testing.T, out string, r badResult)
	}{
		{"missing model file", sharedORT, func() []string { return []string{"--data", good, "--backbone", noModel} },
			1, []string{"model file does not exist", noModel}, "hint: check --backbone", nil},
		{"random-bytes model", sharedORT, func() []string { return []string{"--data", good, "--backbone", randomModel} },
			1, []string{randomModel, "cannot be parsed as ONNX protobuf"}, "hint: the file is not a complete ONNX model", nil},
		{"truncated model", sharedORT, func() []string { return []string{"--data", good, "--backbone", truncModel} },
			1, []string{truncModel, "invalid ONNX model"}, "download or export it again", nil},
		{"feature tensor not in the model", sharedORT, func() []string {
			return []string{"--data", good, "--backbone", model, "--feature", "no_such_tensor"}
		}, 1, []string{`feature tensor "no_such_tensor" is not produced by any node`, `"464_quantized`, `(auto)`},
			"hint: pass one of the candidates with --feature", nil},
		{"missing data path", nothing, func() []string { return []string{"--data", noData} },
			1, []string{noData, "no such file"}, "hint: check --data", nil},
		{"CSV line with a missing field", nothing, func() []string { return []string{"--data", missingField} },
			1, []string{missingField, "line 3", "missing fields: got 1, want 2"}, "hint: fix line 3 of " + missingField, nil},
		{"CSV line with a bad label", nothing, func() []string { return []string{"--data", badLabel} },
			1, []string{badLabel, "line 4", `bad label "-2"`}, "hint: fix line 4", nil},
		{"image that is not an image, fail", sharedORT, func() []string { return []string{"--data", withBad, "--backbone", model} },
			1, []string{`image "` + notImage + `"`, "unknown format"},
			"hint: replace " + notImage + " or remove line 14 of " + withBad + ", or pass --on-bad-image skip", nil},
		{"image that is not an image, skip", sharedORT, func() []string {
			return []string{"--data", withBad, "--backbone", model, "--on-bad-image", "skip"}
		}, 0, []string{"skipped 1 undecodable image(s)"}, "skipped_images.txt",
			func(t *testing.T, out string, r badResult) {
				raw, err := os.ReadFile(filepath.Join(out, "skipped_images.txt"))
				if err != nil || string(raw) != notImage+"\tmanifest line 14: image: unknown format\n" {
					t.Errorf("skipped_images.txt = %q, %v", raw, err)
				}
				m := checkRunFolderComplete(t, out)
				if d, _ := m["data"].(map[string]any); d["skipped_images"] != 1.0 || d["eval_images"] != 6.0 || m["status"] != "ok" {
					t.Errorf("metrics.json: status %v, data %v", m["status"], d)
				}
				if !strings.Contains(r.stdout, "trained") {
					t.Errorf("no results table on stdout:\n%s", r.stdout)
				}
			}},
		{"skip leaves a training class one image", sharedORT, func() []string {
			return []string{"--data", withBadTrain, "--backbone", model, "--on-bad-image", "skip"}
		}, 1, []string{`training class "0" (label 0) has a single image`}, "add images or drop the class", nil},
		{"training class with a single image leaves one to train on", nothing, func() []string { return []string{"--data", single} },
			1, []string{single, "1 of the 2 training classes", "2 images or more"}, "hint: add images to the training classes", nil},
		{"three classes: two are trained on", sharedORT, func() []string {
			return []string{"--config", cfg, "--data", three, "--backbone", model}
		}, 0, []string{"adapted to the data: train_classes 0 (half: 1) -> 2", "a single class", "is evaluated"}, "",
			func(t *testing.T, out string, r badResult) {
				m := checkRunFolderComplete(t, out)
				if d, _ := m["data"].(map[string]any); d["train_classes"] != 2.0 || d["eval_classes"] != 1.0 {
					t.Errorf("metrics.json data: %v", d)
				}
			}},
		{"train-classes 1", nothing, func() []string { return []string{"--data", good, "--train-classes", "1"} },
			2, []string{"train_classes 1", "at least 2 training classes"}, "at least 2", nil},
		{"train-classes leaves nothing to evaluate", nothing, func() []string { return []string{"--data", good, "--train-classes", "4"} },
			2, []string{"train_classes 4 leaves no class of the 4", good}, "hint: pass --train-classes between 2 and 3", nil},
		{"small dataset shrinks the batch", sharedORT, func() []string {
			return []string{"--config", cfgDefaultBatch, "--data", good, "--backbone", model}
		}, 0, []string{"adapted to the data: sampler.classes_per_batch 6 -> 2", "adapted to the data: sampler.samples_per_class 9 -> 3"}, "",
			func(t *testing.T, out string, r badResult) {
				m := checkRunFolderComplete(t, out)
				tr, _ := m["training"].(map[string]any)
				if _, notes := tr["sampler_notes"]; notes || tr["batch_size"] != 6.0 {
					t.Errorf("metrics.json training: %v", tr)
				}
				if a, _ := m["adaptations"].([]any); len(a) != 3 { // and head.center
					t.Errorf("metrics.json adaptations: %v", m["adaptations"])
				}
				raw, err := os.ReadFile(filepath.Join(out, "config.yaml"))
				if err != nil || !strings.Contains(string(raw), "classes_per_batch: 2") || !strings.Contains(string(raw), "key: sampler.classes_per_batch") {
					t.Errorf("config.yaml does not hold the adapted batch: %v\n%s", err, raw)
				}
			}},
		{"config with an unknown key", nothing, func() []string { return []string{"--config", cfgUnknown, "--data", good} },
			2, []string{cfgUnknown, "line 3", `unknown key "head.embeding_dim"`}, "hint: the keys under head are: embedding_dim,", nil},
		{"config with a wrong type", nothing, func() []string { return []string{"--config", cfgWrongType, "--data", good} },
			2, []string{cfgWrongType, "line 3", `optimizer.epochs: got a string "many", want an integer`}, "hint:", nil},
		{"config with a bad on_bad_image", nothing, func() []string { return []string{"--config", cfgBadPolicy, "--data", good} },
			2, []string{cfgBadPolicy, "line 1", `on_bad_image "ignore" is not one of fail, skip`}, "the on_bad_image values are fail, skip", nil},
		{"bad --on-bad-image flag", nothing, func() []string { return []string{"--data", good, "--on-bad-image", "maybe"} },
			2, []string{`on_bad_image "maybe"`}, "is not one of fail, skip", nil},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.needs == sharedORT {
				model = badSharedModel(t)
				needORT(t)
				if _, err := os.Stat(truncModel); err != nil {
					raw, err := os.ReadFile(model)
					if err != nil {
						t.Fatal(err)
					}
					badWrite(t, truncModel, string(raw[:len(raw)/2]))
				}
			}
			out := filepath.Join(dir, "runs", fmt.Sprint(i))
			args := append([]string{"--config", cfg, "--cache", cache, "--out", out}, tc.args()...)
			if tc.needs == nothing {
				// Never reaches the backbone: a model path that does not exist proves it.
				args = append([]string{"--backbone", noModel}, args...)
			}
			r := badRun(args...)
			if r.code != tc.code {
				t.Fatalf("exit code %d, want %d\nstderr:\n%s", r.code, tc.code, r.stderr)
			}
			for _, w := range append(tc.want, tc.hint) {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			if tc.code != 0 {
				if r.stdout != "" {
					t.Errorf("a failed run printed results on stdout:\n%s", r.stdout)
				}
				if n := strings.Count(r.stderr, "error: "); n != 1 {
					t.Errorf("%d error lines, want 1:\n%s", n, r.stderr)
				}
				if m := checkRunFolderComplete(t, out); m != nil && m["status"] != "failed" {
					t.Errorf("metrics.json of a failed run has status %v", m["status"])
				}
				if _, err := os.Stat(out); tc.needs == nothing && !os.IsNotExist(err) {
					t.Errorf("a run failing before the backbone created its run folder (%v)", err)
				}
			}
			if tc.ok != nil {
				tc.ok(t, out, r)
			}
			t.Logf("exit %d: %s", r.code, badErrorLines(r.stderr))
		})
	}
}

// badErrorLines returns the error and hint lines of stderr, for the test log.
func badErrorLines(stderr string) string {
	var keep []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "error: ") || strings.HasPrefix(l, "hint: ") || strings.Contains(l, "level=WARN") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, " | ")
}

// TestRunFolderPolicy: a non-empty --out is refused without --force; with --force, a run that fails
// (here on an undecodable image during extraction) leaves the earlier run's files byte for byte
// and its own complete files in a sibling folder it names; a run that succeeds replaces the folder.
func TestRunFolderPolicy(t *testing.T) {
	model := badSharedModel(t)
	needORT(t)
	dir := t.TempDir()
	cfg := badWrite(t, filepath.Join(dir, "tiny.yaml"), tinyConfig)
	good := badDataset(t, filepath.Join(dir, "good"), []int{3, 3, 3, 3})
	badWrite(t, filepath.Join(dir, "bad", "c2", "broken.png"), "\x89PNG\r\n\x1a\n truncated")
	withBad := badDataset(t, filepath.Join(dir, "bad"), []int{3, 3, 3, 3}, "c2/broken.png,2")
	out := filepath.Join(dir, "run")
	common := []string{"--config", cfg, "--cache", filepath.Join(dir, "cache"), "--backbone", model, "--out", out}

	r := badRun(append(common, "--data", good)...)
	if r.code != 0 {
		t.Fatalf("first run: exit %d\n%s", r.code, r.stderr)
	}
	snapshot := func() map[string]string {
		files := map[string]string{}
		entries, err := os.ReadDir(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(out, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			files[e.Name()] = string(b)
		}
		return files
	}
	before := snapshot()
	for _, f := range []string{"config.yaml", "metrics.json", "model.onnx", "checkpoint.ckpt"} {
		if before[f] == "" {
			t.Fatalf("first run did not write %s", f)
		}
	}
	same := func(step string) {
		t.Helper()
		after := snapshot()
		if len(after) != len(before) {
			t.Errorf("%s: run folder has %d files, had %d", step, len(after), len(before))
		}
		for name, b := range before {
			if after[name] != b {
				t.Errorf("%s: %s of the earlier run was changed", step, name)
			}
		}
	}

	r = badRun(append(common, "--data", withBad)...)
	if r.code != 2 || !strings.Contains(r.stderr, fmt.Sprintf("run folder %q is not empty", out)) || !strings.Contains(r.stderr, "hint: choose a new --out folder, or pass --force") {
		t.Errorf("reuse without --force: exit %d\n%s", r.code, r.stderr)
	}
	same("without --force")

	r = badRun(append(common, "--data", withBad, "--force")...)
	if r.code != 1 || !strings.Contains(r.stderr, filepath.Join(dir, "bad", "c2", "broken.png")) ||
		!strings.Contains(r.stderr, fmt.Sprintf("the previous run in %q is unchanged", out)) {
		t.Errorf("failing --force run: exit %d\n%s", r.code, r.stderr)
	}
	same("failed --force run")
	partials, _ := filepath.Glob(out + ".partial-*")
	if len(partials) != 1 || !strings.Contains(r.stderr, partials[0]) {
		t.Fatalf("failed run's folder: %v (stderr %s)", partials, r.stderr)
	}
	if m := checkRunFolderComplete(t, partials[0]); m["status"] != "failed" || !strings.Contains(fmt.Sprint(m["error"]), "broken.png") {
		t.Errorf("failed run's metrics.json: status %v error %v", m["status"], m["error"])
	}

	r = badRun(append(common, "--data", good, "--force", "--seed", "5")...)
	if r.code != 0 {
		t.Fatalf("succeeding --force run: exit %d\n%s", r.code, r.stderr)
	}
	m := checkRunFolderComplete(t, out)
	if m["run_dir"] != out || m["status"] != "ok" {
		t.Errorf("replaced run: metrics.json run_dir %v status %v", m["run_dir"], m["status"])
	}
	if exp, _ := m["export"].(map[string]any); exp["path"] != filepath.Join(out, "model.onnx") {
		t.Errorf("replaced run: export path %v", exp["path"])
	}
	if raw, _ := os.ReadFile(filepath.Join(out, "config.yaml")); !strings.Contains(string(raw), "seed: 5") {
		t.Errorf("the run folder was not replaced by the --force run:\n%s", raw)
	}
	left, _ := filepath.Glob(out + ".*")
	if len(left) != 1 || left[0] != partials[0] {
		t.Errorf("folders beside the run folder: %v, want only the failed run's %s", left, partials[0])
	}
}

// TestRunSkippedImagesCache: features cached by a run that skipped an undecodable image are reused
// by the next skip run (which still lists the image) but not by a fail run, which fails naming it.
func TestRunSkippedImagesCache(t *testing.T) {
	model := badSharedModel(t)
	needORT(t)
	dir := t.TempDir()
	cfg := badWrite(t, filepath.Join(dir, "tiny.yaml"), tinyConfig)
	bad := badWrite(t, filepath.Join(dir, "d", "c1", "empty.png"), "")
	data := badDataset(t, filepath.Join(dir, "d"), []int{3, 3, 3, 3}, "c1/empty.png,1")
	common := []string{"--config", cfg, "--cache", filepath.Join(dir, "cache"), "--backbone", model, "--data", data}
	for i, want := range []struct {
		policy   string
		code     int
		cacheHit bool
	}{{"skip", 0, false}, {"skip", 0, true}, {"fail", 1, false}} {
		out := filepath.Join(dir, fmt.Sprint("run", i))
		r := badRun(append(common, "--out", out, "--on-bad-image", want.policy, "-v")...)
		if r.code != want.code {
			t.Fatalf("run %d (%s): exit %d, want %d\n%s", i, want.policy, r.code, want.code, r.stderr)
		}
		m := checkRunFolderComplete(t, out)
		if want.code == 1 {
			if !strings.Contains(r.stderr, fmt.Sprintf("error: pipeline: extract: data: image %q", bad)) ||
				!strings.Contains(r.stderr, "extracting again (on_bad_image fail)") {
				t.Errorf("fail run after a skip run:\n%s", r.stderr)
			}
			continue
		}
		timing, _ := m["timing"].(map[string]any)
		d, _ := m["data"].(map[string]any)
		if timing["feature_cache_hit"] != want.cacheHit || d["skipped_images"] != 1.0 {
			t.Errorf("run %d: cache hit %v skipped %v, want %v and 1", i, timing["feature_cache_hit"], d["skipped_images"], want.cacheHit)
		}
		if raw, _ := os.ReadFile(filepath.Join(out, "skipped_images.txt")); !strings.HasPrefix(string(raw), bad+"\t") {
			t.Errorf("run %d: skipped_images.txt = %q", i, raw)
		}
	}
}

// TestRunBadORTLibrary runs `pipeline run --onnxruntime <bad>` in a child process (onnxruntime
// can be initialized only once per process): a missing library and a file that is not one each
// give one error line saying how to fix it. It needs neither ../shared nor onnxruntime.
func TestRunBadORTLibrary(t *testing.T) {
	if args := os.Getenv("PIPELINE_TEST_RUN_ARGS"); args != "" {
		os.Exit(run(strings.Split(args, "\x1f"), os.Stdout, os.Stderr))
	}
	dir := t.TempDir()
	cfg := badWrite(t, filepath.Join(dir, "tiny.yaml"), tinyConfig)
	data := badDataset(t, filepath.Join(dir, "d"), []int{2, 2, 2, 2})
	notLib := badWrite(t, filepath.Join(dir, "libonnxruntime.so.1"), "not an ELF file\n")
	for _, tc := range []struct {
		lib, want string
	}{
		{"/nonexistent/lib.so", `error: backbone: ort: onnxruntime library not found at "/nonexistent/lib.so": run ` + "`make ort`" + ` or set ONNXRUNTIME_SHARED_LIBRARY_PATH / --onnxruntime`},
		{notLib, fmt.Sprintf(`error: backbone: ort: cannot load onnxruntime library %q (`, notLib)},
	} {
		args := []string{"run", "--config", cfg, "--data", data, "--backbone", filepath.Join(dir, "model.onnx"),
			"--out", filepath.Join(dir, "run"), "--cache", filepath.Join(dir, "cache"), "--onnxruntime", tc.lib}
		cmd := exec.Command(os.Args[0], "-test.run=^TestRunBadORTLibrary$")
		cmd.Env = append(os.Environ(), "PIPELINE_TEST_RUN_ARGS="+strings.Join(args, "\x1f"))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != 1 || stdout.Len() != 0 {
			t.Errorf("--onnxruntime %s: exit %d (%v), stdout %q, want exit 1 and nothing on stdout", tc.lib, code, err, stdout.String())
		}
		// One error line, saying how to fix it, and no other hint.
		var errLines []string
		for _, l := range strings.Split(stderr.String(), "\n") {
			if strings.HasPrefix(l, "error: ") || strings.HasPrefix(l, "hint: ") {
				errLines = append(errLines, l)
			}
		}
		msg := strings.Join(errLines, "\n")
		if len(errLines) != 1 || !strings.HasPrefix(msg, tc.want) || !strings.HasSuffix(msg, "run `make ort` or set ONNXRUNTIME_SHARED_LIBRARY_PATH / --onnxruntime") {
			t.Errorf("--onnxruntime %s: stderr\n%s\nwant one error line starting %q and saying how to fix it", tc.lib, stderr.String(), tc.want)
		}
		if _, err := os.Stat(filepath.Join(dir, "run")); !os.IsNotExist(err) {
			t.Errorf("--onnxruntime %s: the run folder was created (%v)", tc.lib, err)
		}
		t.Logf("exit %d: %s", code, msg)
	}
}
