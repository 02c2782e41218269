package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
)

// sharedDir returns ../shared (or $PIPELINE_SHARED_DIR) or skips the test.
func sharedDir(t testing.TB) string {
	t.Helper()
	testenv.Int8Model(t)
	return testenv.SharedDir(t)
}

func needORT(t testing.TB) {
	t.Helper()
	testenv.ORTLibrary(t)
}

// smallCUB writes a manifest of the first `per` images of the first `classes` CUB-100 classes.
func smallCUB(t testing.TB, _ string, classes, per int) string {
	return testenv.SmallCUB(t, classes, per)
}

func TestRunEndToEndSmall(t *testing.T) {
	slowEndToEnd(t)
	shared := sharedDir(t)
	needORT(t)
	cfg := config.DefaultConfig()
	cfg.Data = smallCUB(t, shared, 8, 12)
	cfg.Backbone.Path = filepath.Join(shared, "models", "mobilenetv2-12-int8.onnx")
	cfg.Out = filepath.Join(t.TempDir(), "run")
	cfg.Cache = filepath.Join(t.TempDir(), "cache")
	cfg.ValidationClasses = 1
	cfg.Head.EmbeddingDim = 32
	cfg.Backbone.TrainBlocks, cfg.Head.Center = 0, false // head only: tail runs have their own tests
	// The float conversion on every CPU (auto keeps the int8 kernels on VNNI CPUs, and model.onnx is
	// then int8 already), so that model-int8.onnx is made and checked here.
	cfg.Backbone.Dequantize = config.DequantizeAlways
	cfg.Optimizer.Epochs = 3
	cfg.Optimizer.LR = 1e-4
	cfg.Sampler = config.SamplerConfig{ClassesPerBatch: 3, SamplesPerClass: 4}
	var logs bytes.Buffer
	env := RunEnv{Log: slog.New(slog.NewTextHandler(&logs, nil))}
	sum, err := Run(context.Background(), cfg, env)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	if sum.Data.JPEGDecoder != data.JPEGDecoder() || !strings.HasPrefix(sum.Data.JPEGDecoder, "libjpeg-turbo-") {
		t.Errorf("data.jpeg_decoder %q, want %q (libjpeg-turbo in make test's build)", sum.Data.JPEGDecoder, data.JPEGDecoder())
	}
	if sum.Data.TrainClasses != 4 || sum.Data.EvalClasses != 4 || sum.Data.ValidationClasses != 1 || sum.Data.EvalImages != 48 {
		t.Fatalf("split: %+v", sum.Data)
	}
	if sum.Export.MaxAbsDiff > 1e-4 || sum.Export.CheckedRows != 32 {
		t.Fatalf("export check: %+v", sum.Export)
	}
	if sum.Timing.FeatureCacheHit || sum.Timing.ExtractImagesPerS <= 0 || sum.Timing.Epochs != 3 {
		t.Fatalf("timing: %+v", sum.Timing)
	}
	for _, m := range []float64{sum.Baseline.RecallAt1, sum.Baseline.NMI, sum.Trained.RecallAt1, sum.Trained.MAPAtR} {
		if m <= 0 || m > 1 {
			t.Fatalf("metric out of (0,1]: baseline %+v trained %+v", sum.Baseline, sum.Trained)
		}
	}
	// metrics.json holds the documented keys.
	raw, err := os.ReadFile(filepath.Join(cfg.Out, "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Baseline, Trained, Timing, Export map[string]any
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for sec, m := range map[string]map[string]any{"baseline": doc.Baseline, "trained": doc.Trained} {
		for _, k := range []string{"recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8", "nmi", "map_at_r", "r_precision"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("metrics.json %s lacks %s", sec, k)
			}
		}
	}
	for _, k := range []string{"extract_images_per_s", "train_seconds", "epochs"} {
		if _, ok := doc.Timing[k]; !ok {
			t.Fatalf("metrics.json timing lacks %s", k)
		}
	}
	for _, k := range []string{"path", "max_abs_diff"} {
		if _, ok := doc.Export[k]; !ok {
			t.Fatalf("metrics.json export lacks %s", k)
		}
	}
	// The variants: model.onnx and model-int8.onnx, each scored and timed; in the int8 one every
	// Conv, residual Add and the final pool runs as an int8 kernel, within a few R@1 points of the float model on
	// these 48 images.
	vs := sum.Export.Variants
	if len(vs) != 2 || vs[0].Path != sum.Export.Path || vs[0].Int8 || !vs[1].Int8 || filepath.Base(vs[1].Path) != "model-int8.onnx" ||
		!vs[0].FlipTTA || !vs[1].FlipTTA || sum.Export.SourceBackboneImagesPerS <= 0 {
		t.Fatalf("export variants: %+v, source %v", vs, sum.Export.SourceBackboneImagesPerS)
	}
	for _, v := range vs {
		if v.RecallAt1 <= 0 || v.NMI <= 0 || v.ImagesPerS <= 0 || v.LatencyMS <= 0 {
			t.Fatalf("variant not measured: %+v", v)
		}
	}
	if vs[1].Int8Nodes != 52+10+1 || vs[1].FloatConvs != 0 || vs[1].Calibration != "percentile" || vs[0].Int8Nodes != 0 {
		t.Fatalf("onnxruntime did not fuse the QDQ model into int8 kernels: %+v", vs[1])
	}
	if !vs[1].BiasCorrected || !(vs[1].FeatureShift > 0) || vs[0].BiasCorrected || vs[1].WeightRounding != "nearest" || vs[0].WeightRounding != "" {
		t.Errorf("the int8 variant is not bias-corrected and rounded to nearest (the defaults): %+v", vs[1])
	}
	if d := vs[1].RecallAt1 - vs[0].RecallAt1; d < -0.1 || d > 0.1 {
		t.Errorf("int8 R@1 %.3f vs float %.3f", vs[1].RecallAt1, vs[0].RecallAt1)
	}
	// model.onnx is the model the run evaluated (and checked above): the trained model, or the raw
	// features flip averaged when they won on the validation classes. It takes that evaluation,
	// which is what onnxruntime gives on all the evaluation images. The int8 one is scored there.
	evaluated := sum.Trained
	if sum.Choice != nil && sum.Choice.Source == sourceRaw {
		evaluated = *sum.BaselineTTA
	}
	if vs[0].RecallAt1 != evaluated.RecallAt1 || vs[0].NMI != evaluated.NMI || !strings.Contains(vs[0].Scored, "run's evaluation") ||
		vs[1].Scored != "onnxruntime on the 48 evaluation images" {
		t.Errorf("variants' scores: %+v, the run's evaluation of model.onnx %+v (%s)", vs, evaluated, sum.Choice.Source)
	}
	ds, err := data.Load(cfg.Data)
	if err != nil {
		t.Fatal(err)
	}
	runCfg := cfg
	var a adaptation
	split, err := a.adaptSplit(&runCfg, ds)
	if err != nil {
		t.Fatal(err)
	}
	pre, err := cfg.Preprocess.ToData()
	if err != nil {
		t.Fatal(err)
	}
	again := []ExportVariant{{Path: vs[0].Path, FlipTTA: true}}
	if _, err := MeasureVariants(context.Background(), again, VariantCheck{Eval: ImageSet{DS: ds, Items: split.evalIdx, Pre: pre, Workers: 2},
		KMeansRestarts: cfg.Eval.KMeansRestarts, Seed: cfg.Seed}); err != nil {
		t.Fatal(err)
	}
	if again[0].RecallAt1 != evaluated.RecallAt1 || again[0].NMI != evaluated.NMI {
		t.Errorf("model.onnx in onnxruntime on the evaluation images: R@1 %v NMI %v, the run's evaluation %v %v",
			again[0].RecallAt1, again[0].NMI, evaluated.RecallAt1, evaluated.NMI)
	}
	t.Logf("model.onnx (%s): R@1 %v NMI %v in onnxruntime, %v %v in the run", sum.Choice.Source, again[0].RecallAt1, again[0].NMI, evaluated.RecallAt1, evaluated.NMI)
	if _, ok := doc.Export["variants"]; !ok {
		t.Fatal("metrics.json export lacks variants")
	}
	if _, ok := doc.Export["source_backbone_images_per_s"]; !ok {
		t.Fatal("metrics.json export lacks source_backbone_images_per_s")
	}
	// report.html: the two plots and 8 queries with 5 neighbours each, all inline.
	if sum.Report != filepath.Join(cfg.Out, "report.html") {
		t.Fatalf("summary report %q", sum.Report)
	}
	html, err := os.ReadFile(sum.Report)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(html), `src="data:image/`); n != 2+8*6 || !strings.Contains(string(html), `id="score-plot"`) {
		t.Fatalf("report.html has %d inline images (want 50), score plot: %v", n, strings.Contains(string(html), `id="score-plot"`))
	}
	for _, f := range []string{"model.onnx", "model-int8.onnx", "config.yaml", "checkpoint.ckpt"} {
		if _, err := os.Stat(filepath.Join(cfg.Out, f)); err != nil {
			t.Fatalf("run folder lacks %s", f)
		}
	}
	ck, err := LoadCheckpoint(filepath.Join(cfg.Out, "checkpoint.ckpt"))
	if err != nil || ck.Epoch != sum.Training.BestEpoch {
		t.Fatalf("checkpoint: %v epoch %v want %d", err, ck, sum.Training.BestEpoch)
	}

	// A second run reuses the feature cache and, with the same seed, reproduces the metrics.
	cfg.Out = filepath.Join(t.TempDir(), "run2")
	sum2, err := Run(context.Background(), cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	if !sum2.Timing.FeatureCacheHit {
		t.Fatal("second run did not use the feature cache")
	}
	if sum2.Trained != sum.Trained || sum2.Baseline != sum.Baseline {
		t.Fatalf("same seed, different metrics:\n%+v\n%+v", sum.Trained, sum2.Trained)
	}
}

func TestSplitClassesDefaultHalf(t *testing.T) {
	shared := sharedDir(t)
	cfg := config.DefaultConfig()
	cfg.Data = filepath.Join(shared, "data", "cub100")
	ds, err := data.Load(cfg.Data)
	if err != nil {
		t.Fatal(err)
	}
	s, err := splitClasses(ds, 0, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.fit)+len(s.val) != 50 || len(s.val) != 10 || len(s.eval) != 50 || s.eval[0] != 50 || s.eval[49] != 99 {
		t.Fatalf("CUB-100 protocol split wrong: fit %v val %v eval %d..%d", s.fit, s.val, s.eval[0], s.eval[len(s.eval)-1])
	}
	for _, l := range s.val {
		if l >= 50 {
			t.Fatalf("validation class %d is a test class", l)
		}
	}
	if len(s.evalIdx) != 2953 {
		t.Fatalf("%d evaluation images, want 2953", len(s.evalIdx))
	}
	if _, err := splitClasses(ds, 100, 0, 1); err == nil {
		t.Fatal("train_classes = all classes accepted")
	}
}

// TestRunDequantized: backbone.dequantize always runs the shared int8 model as its float
// conversion for the frozen features: metrics.json says so, the features get their own cache
// entry, the exported model (backbone nodes + head) is reproduced by onnxruntime, and its
// baseline is that of the float model, not the int8 one.
func TestRunDequantized(t *testing.T) {
	slowEndToEnd(t)
	shared := sharedDir(t)
	needORT(t)
	cfg := config.DefaultConfig()
	cfg.Data = smallCUB(t, shared, 6, 10)
	cfg.Backbone.Path = filepath.Join(shared, "models", "mobilenetv2-12-int8.onnx")
	cfg.Cache = filepath.Join(t.TempDir(), "cache")
	cfg.ValidationClasses = 1
	cfg.Head.EmbeddingDim = 16
	cfg.Backbone.TrainBlocks, cfg.Head.Center = 0, false
	cfg.Optimizer.Epochs = 1
	cfg.Sampler = config.SamplerConfig{ClassesPerBatch: 2, SamplesPerClass: 4}
	var sums []*Summary
	for _, mode := range []config.Dequantize{config.DequantizeNever, config.DequantizeAlways} {
		c := cfg
		c.Backbone.Dequantize = mode
		c.Out = filepath.Join(t.TempDir(), string(mode))
		sum, err := Run(context.Background(), c, RunEnv{})
		if err != nil {
			t.Fatalf("dequantize %s: %v", mode, err)
		}
		if sum.Data.Dequantized != (mode == "always") || sum.Export.MaxAbsDiff > 1e-4 {
			t.Fatalf("dequantize %s: dequantized %v, export max |diff| %g", mode, sum.Data.Dequantized, sum.Export.MaxAbsDiff)
		}
		sums = append(sums, sum)
	}
	feats, _ := filepath.Glob(filepath.Join(cfg.Cache, "*.feat"))
	if len(feats) != 2 {
		t.Errorf("feature cache holds %d files, want one per variant", len(feats))
	}
	if sums[0].Baseline == sums[1].Baseline {
		t.Errorf("int8 and float baselines are identical: %+v", sums[0].Baseline)
	}
	cfg.Backbone.Dequantize = "sometimes"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `backbone.dequantize "sometimes"`) {
		t.Errorf("Validate: %v", err)
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
