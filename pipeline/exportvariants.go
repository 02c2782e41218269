package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/parallel"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/export"
	"github.com/grouploss/pipeline/pipeline/metrics"
)

// ExportVariant is one deployable model written from a run, reloaded in onnxruntime, scored on the
// evaluation classes and timed (metrics.json export.variants).
type ExportVariant struct {
	Path    string `json:"path"`
	Int8    bool   `json:"int8"`
	FlipTTA bool   `json:"flip_tta"`
	// ReduceRange (int8 only): 7-bit weights, for x86 CPUs without VNNI (export.reduce_range).
	ReduceRange bool `json:"reduce_range,omitempty"`
	// Calibration (int8 only) is the method that chose the activation ranges.
	Calibration string `json:"calibration,omitempty"`
	// WeightRounding (int8 only): gptq when 1x1 Convs were rounded with error feedback, else nearest.
	WeightRounding string `json:"weight_rounding,omitempty"`
	// BiasCorrected (int8 only): the features' mean shift was added back (export.bias_correction);
	// FeatureShift is that shift relative to the float features' mean.
	BiasCorrected bool    `json:"bias_corrected,omitempty"`
	FeatureShift  float64 `json:"feature_shift,omitempty"`
	RecallAt1     float64 `json:"recall_at_1"`
	NMI           float64 `json:"nmi"`
	// Scored says where RecallAt1 and NMI come from: the file run in onnxruntime on the
	// evaluation images, or the run's evaluation of the same model (Evaluated).
	Scored string `json:"scored,omitempty"`
	// Evaluated, when set, is the evaluation of the very model this file holds (a run's model.onnx,
	// checked against the in-process embeddings on exportCheckImages evaluation images):
	// MeasureVariants takes its R@1 and NMI instead of embedding every evaluation image again.
	Evaluated *metrics.Result `json:"-"`
	// ImagesPerS is the best of a few timed batches of 32 images; LatencyMS the best of a few
	// single-image runs, in the same rounds as the source backbone's timing.
	ImagesPerS float64 `json:"images_per_s"`
	LatencyMS  float64 `json:"latency_ms"`
	// Int8Nodes and FloatConvs count onnxruntime's optimized graph: the QLinear*/QGemm kernels
	// the QDQ pairs were fused into, and Conv nodes still running in float.
	Int8Nodes  int `json:"int8_nodes"`
	FloatConvs int `json:"float_convs"`
}

// Describe is the variant in one line: kind, R@1, NMI, speed.
func (v ExportVariant) Describe() string {
	kind := "float"
	if !v.Int8 && v.Int8Nodes > 0 {
		kind = "float after the backbone's int8 layers" // backbone.tail_prefix int8
	}
	if v.Int8 {
		kind = "int8 (" + v.Calibration + " calibration"
		if v.ReduceRange {
			kind += ", 7-bit weights"
		}
		if v.WeightRounding != "" {
			kind += ", " + v.WeightRounding + " rounding"
		}
		if v.BiasCorrected {
			kind += fmt.Sprintf(", bias-corrected: mean shift %.3f", v.FeatureShift)
		}
		kind += ")"
	}
	mirror := "without"
	if v.FlipTTA {
		mirror = "with"
	}
	return fmt.Sprintf("%s, %s the mirror pass: R@1 %.2f, NMI %.2f; %.1f images/s (batch 32), %.1f ms (batch 1); %d int8 kernels, %d float Conv",
		kind, mirror, 100*v.RecallAt1, 100*v.NMI, v.ImagesPerS, v.LatencyMS, v.Int8Nodes, v.FloatConvs)
}

// ResolveReduceRange turns export.reduce_range into a choice for cpu, and says why.
func ResolveReduceRange(mode config.ReduceRange, cpu backbone.CPUInfo) (bool, string) {
	switch mode {
	case config.ReduceRangeOn:
		return true, "requested"
	case config.ReduceRangeOff:
		return false, "requested"
	}
	if cpu.X86 && !cpu.VNNI() {
		return true, "auto: exported on an x86 CPU without VNNI (" + cpu.Model + ")"
	}
	return false, "auto: exported on a CPU with VNNI or not x86 (" + cpu.Model + ")"
}

// ImageSet is a list of dataset images with their preprocessing: what calibrates, scores or times
// a variant.
type ImageSet struct {
	DS      *data.Dataset
	Items   []int
	Pre     data.Preprocess
	Workers int
}

// VariantOptions describe the variant MakeVariant derives from an exported float model.
type VariantOptions struct {
	Int8, FlipTTA  bool
	ReduceRange    config.ReduceRange    // config.ReduceRangeAuto, ReduceRangeOn or ReduceRangeOff; "": the default
	Calibration    config.Calibration    // "": the default
	WeightRounding config.WeightRounding // "": the default (nearest)
	// BiasCorrection adds back the shift of the int8 features' mean measured on the calibration
	// images (export.AddToTensor); nil: on, the default.
	BiasCorrection *bool
	Threads        int
	Log            func(msg string, args ...any) // progress and warnings; nil: silent
}

// VariantInfo is what MakeVariant decided.
type VariantInfo struct {
	ReduceRange bool
	Calibration string
	// BiasCorrected: the int8 features' mean shift, FeatureShift relative to the float features'
	// mean (L2), was added back.
	BiasCorrected bool
	FeatureShift  float64
	Warnings      []string
	Report        *export.QuantizeReport
}

// MakeVariant returns a variant of the exported float model m (images -> embeddings): with or
// without the mirror pass, and for Int8 quantized (the backbone's Conv and Add nodes, up to its
// features) with activation ranges calibrated on cal's images. The model m is not modified.
func MakeVariant(ctx context.Context, m *onnx.ModelProto, o VariantOptions, cal ImageSet) (*onnx.ModelProto, *VariantInfo, error) {
	info := &VariantInfo{}
	if !o.Int8 {
		v, err := export.SetFlip(m, o.FlipTTA)
		return v, info, err
	}
	if len(cal.Items) == 0 {
		return nil, nil, fmt.Errorf("pipeline: int8 export: no calibration images")
	}
	// Calibrated once without the mirror pass: a mirrored image has the same value ranges.
	plain, err := export.SetFlip(m, false)
	if err != nil {
		return nil, nil, err
	}
	var why string
	info.ReduceRange, why = ResolveReduceRange(o.ReduceRange, backbone.CPU())
	info.Calibration = string(o.Calibration)
	qo := export.QuantizeOptions{ReduceRange: info.ReduceRange, Until: backbone.OutputName}
	targets, err := export.QuantizeTargets(plain, qo)
	if err != nil {
		return nil, nil, err
	}
	if len(targets) == 0 {
		return nil, nil, fmt.Errorf("%w: the model has no Conv or Add before %q", ErrNothingToQuantize, backbone.OutputName)
	}
	var pointwise map[string]int // the inputs whose moments let Quantize round with error feedback
	if o.WeightRounding == config.WeightRoundingGPTQ {
		if pointwise, err = export.PointwiseInputs(plain, qo); err != nil {
			return nil, nil, err
		}
	}
	bias := o.BiasCorrection == nil || *o.BiasCorrection
	c, err := calibrate(ctx, plain, targets, pointwise, bias, o, cal)
	if err != nil {
		return nil, nil, err
	}
	qo.Moments = c.moments
	ranges, err := c.ranges.Ranges(string(o.Calibration))
	if err != nil {
		return nil, nil, err
	}
	info.Warnings = append(info.Warnings, c.warnings...)
	q, rep, err := export.Quantize(plain, ranges, qo)
	if err != nil {
		return nil, nil, err
	}
	info.Report = rep
	if len(rep.Degenerate) > 0 {
		info.Warnings = append(info.Warnings, fmt.Sprintf("int8 export: %d of %d activation tensors took a single value on the %d calibration images (e.g. %q), their scale is set to 1: "+
			"the calibration images do not exercise the model (all alike?); use more, varied training images (export.calibration_images)",
			len(rep.Degenerate), rep.Activations, len(cal.Items), rep.Degenerate[0]))
	}
	if bias {
		if q, info.FeatureShift, err = correctBias(ctx, c.features, q, o.Threads, cal); err != nil {
			return nil, nil, err
		}
		info.BiasCorrected = true
		onnxpb.SetMetadata(q, export.MetaBiasCorrection, fmt.Sprintf("the features' mean over the %d calibration images restored after the int8 backbone (it had moved by %.3g of the float mean)",
			len(cal.Items), info.FeatureShift))
		if o.Log != nil {
			o.Log("int8 bias correction", "feature_mean_shift", info.FeatureShift)
		}
	}
	onnxpb.SetMetadata(q, "quantization.calibration", string(o.Calibration))
	onnxpb.SetMetadata(q, "quantization.calibration_images", strconv.Itoa(len(cal.Items)))
	onnxpb.SetMetadata(q, "quantization.reduce_range_reason", why)
	if info.ReduceRange {
		onnxpb.SetMetadata(q, "quantization.target_cpu", "x86 without VNNI (AVX2: 7-bit weights keep u8s8 int16 sums from saturating)")
	} else {
		onnxpb.SetMetadata(q, "quantization.target_cpu", "VNNI (8-bit weights; on x86 without VNNI onnxruntime's u8s8 sums saturate)")
	}
	v, err := export.SetFlip(q, o.FlipTTA)
	return v, info, err
}

// Variant is the ExportVariant entry of the variant MakeVariant made with o, written at path
// (its measured fields still empty); the int8 fields only for an int8 variant.
func (i *VariantInfo) Variant(path string, o VariantOptions) ExportVariant {
	v := ExportVariant{Path: path, Int8: o.Int8, FlipTTA: o.FlipTTA}
	if !o.Int8 {
		return v
	}
	v.ReduceRange, v.Calibration = i.ReduceRange, i.Calibration
	v.WeightRounding = string(config.WeightRoundingNearest)
	if i.Report != nil && i.Report.ErrorFeedback > 0 {
		v.WeightRounding = string(config.WeightRoundingGPTQ)
	}
	v.BiasCorrected, v.FeatureShift = i.BiasCorrected, i.FeatureShift
	return v
}

// ErrNothingToQuantize: the model has no op the int8 export quantizes; its float export is as fast.
var ErrNothingToQuantize = errors.New("pipeline: int8 export: nothing to quantize")

// calibration is what the float model gave on the calibration images.
type calibration struct {
	ranges   *export.Calibrator
	moments  *export.Moments // second moments of the pointwise tensors; nil when none
	features []float64       // the mean of its backbone features; nil unless asked for
	warnings []string        // the calibration set is too small to be representative
}

// calibrate runs the float model on the calibration images and gathers the targets' statistics,
// the second moments of the pointwise tensors (a subset of the targets, with their channel
// counts), and with features the mean of the backbone features (what bias correction compares
// the int8 model's with).
func calibrate(ctx context.Context, m *onnx.ModelProto, targets []string, pointwise map[string]int, features bool, o VariantOptions, cal ImageSet) (*calibration, error) {
	c := &calibration{ranges: export.NewCalibrator(targets)}
	if len(cal.Items) < 32 {
		c.warnings = append(c.warnings, fmt.Sprintf("int8 export: calibrating on %d images only: the activation ranges may not cover other images (a few hundred are usual)", len(cal.Items)))
	}
	if len(pointwise) > 0 {
		c.moments = export.NewMoments(pointwise)
	}
	probed, at := targets, slices.Index(targets, backbone.OutputName) // at: where the features come out
	if features && at < 0 {
		probed, at = append(slices.Clip(targets), backbone.OutputName), len(targets)
	}
	var mean rowMean
	err := probeBatches(ctx, m, probed, o.Threads, cal, "calibration", func(outs [][]float32, n int) error {
		if features {
			mean.add(outs[at], n)
		}
		return observeAll(c.ranges, c.moments, targets, outs[:len(targets)], n)
	}, func(images, n int) {
		if o.Log != nil && images%64 < n {
			o.Log("int8 calibration", "images", images, "of", len(cal.Items))
		}
	})
	if err != nil {
		return nil, err
	}
	if features {
		if c.features, err = mean.mean("calibration"); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// probeBatches runs m on the images of set, 8 at a time, and hands the values of the probed
// tensors to each, then the images so far and in the batch to done (nil: none). onnxruntime's
// errors say what the run was for.
func probeBatches(ctx context.Context, m *onnx.ModelProto, tensors []string, threads int, set ImageSet, what string,
	each func(outs [][]float32, n int) error, done func(images, n int)) error {
	b, err := onnxpb.Marshal(m)
	if err != nil {
		return err
	}
	probe, err := ort.NewProbe(b, tensors, ort.Options{Threads: threads})
	if err != nil {
		return fmt.Errorf("pipeline: %s: %w", what, err)
	}
	defer probe.Close()
	chw, images := set.Pre.Size(), 0
	for batch := range data.Batches(ctx, set.DS, set.Items, set.Pre, 8, set.Workers) {
		if batch.Err != nil {
			return batch.Err
		}
		outs, err := probe.Run(batch.Data[:batch.N*chw], batch.N)
		if err != nil {
			return fmt.Errorf("pipeline: %s: %w", what, err)
		}
		if err := each(outs, batch.N); err != nil {
			return err
		}
		images += batch.N
		if done != nil {
			done(images, batch.N)
		}
	}
	return ctx.Err()
}

// rowMean accumulates the mean of the rows of batches of [n, d] values.
type rowMean struct {
	sum []float64
	n   int
}

func (r *rowMean) add(x []float32, n int) {
	d := len(x) / n
	if r.sum == nil {
		r.sum = make([]float64, d)
	}
	for i, v := range x {
		r.sum[i%d] += float64(v)
	}
	r.n += n
}

func (r *rowMean) mean(what string) ([]float64, error) {
	if r.n == 0 {
		return nil, fmt.Errorf("pipeline: %s: no images", what)
	}
	out := make([]float64, len(r.sum))
	for i, v := range r.sum {
		out[i] = v / float64(r.n)
	}
	return out, nil
}

// correctBias returns q with the shift of its features' mean from floatMean (the float model's,
// from the calibration pass), both over the calibration images, added back after its backbone
// (see export.FeatureShift), and the shift's relative size.
func correctBias(ctx context.Context, floatMean []float64, q *onnx.ModelProto, threads int, cal ImageSet) (*onnx.ModelProto, float64, error) {
	qm, err := featureMean(ctx, q, threads, cal)
	if err != nil {
		return nil, 0, err
	}
	delta, rel, err := export.FeatureShift(floatMean, qm)
	if err != nil {
		return nil, 0, err
	}
	c, err := export.AddToTensor(q, backbone.OutputName, delta)
	return c, rel, err
}

// featureMean is the mean of m's backbone features (backbone.OutputName) over the images of set.
func featureMean(ctx context.Context, m *onnx.ModelProto, threads int, set ImageSet) ([]float64, error) {
	var mean rowMean
	err := probeBatches(ctx, m, []string{backbone.OutputName}, threads, set, "bias correction", func(outs [][]float32, n int) error {
		mean.add(outs[0], n)
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	return mean.mean("bias correction")
}

// observeAll adds each target's values of a batch of n images to the calibrator and, for the
// tensors it accumulates, to moments (nil: none), the targets spread over the cores (each target's
// statistics are its own); the errors name their tensors.
func observeAll(c *export.Calibrator, moments *export.Moments, targets []string, outs [][]float32, n int) error {
	errs := make([]error, len(targets))
	work := 0
	for _, o := range outs {
		work += len(o)
	}
	parallel.For(len(targets), work, func(i int) {
		errs[i] = c.Observe(targets[i], outs[i])
		if errs[i] == nil && moments != nil && moments.Of(targets[i]) != nil {
			errs[i] = moments.Observe(targets[i], outs[i], n)
		}
	})
	return errors.Join(errs...)
}

// CalibrationSample returns n of the items, a seeded random sample in the original order.
func CalibrationSample(items []int, n int, seed int64) []int {
	if n >= len(items) {
		return append([]int(nil), items...)
	}
	perm := rand.New(rand.NewSource(seed)).Perm(len(items))[:n]
	sort.Ints(perm)
	out := make([]int, n)
	for i, p := range perm {
		out[i] = items[p]
	}
	return out
}

// Timing of a model in onnxruntime (MeasureVariants).
const (
	timingBatch = 32
	// Models are timed in turn, round after round, the order reversed every other round, and
	// each keeps its median: with 3 rounds in a fixed order and the best of each, the int8
	// export measured 0.92-0.98x the source backbone on 2 idle cores where 40-60 shuffled
	// rounds measured 1.02x, the same three times (README, "Deploying").
	timingRounds = 15
	latencyRuns  = 3 // single-image runs per round
)

// VariantCheck scores and times written variants.
type VariantCheck struct {
	Eval           ImageSet
	Threads        int
	KMeansRestarts int
	Seed           int64
	// Source is the backbone file the model was made from, timed beside the variants ("" to skip).
	Source   string
	Progress io.Writer
	// Written holds the bytes of variants this process built and wrote, by path: they are not
	// read and parsed again.
	Written map[string][]byte
	// ExactInt8 scores with onnxruntime's graph optimizations off (ort.Options.Unoptimized): the
	// int8 arithmetic of CPUs with VNNI, simulated on any CPU. The timing is then not meaningful.
	ExactInt8 bool
}

// MeasureVariants reloads each variant's file (our ONNX checks, then onnxruntime; the bytes in
// c.Written go to onnxruntime as they are), scores it on the evaluation images (Recall@1, NMI; a
// variant with Evaluated takes those) and times it, the source backbone in the same rounds. It
// fills the measured fields of vs and returns the source backbone's images/s (0 without Source).
func MeasureVariants(ctx context.Context, vs []ExportVariant, c VariantCheck) (float64, error) {
	sessions := make([]*ort.Session, 0, len(vs)+1)
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	labels := c.Eval.DS.Labels(c.Eval.Items)
	for i := range vs {
		v := &vs[i]
		b, ok := c.Written[v.Path]
		if !ok {
			var err error
			if b, err = onnxpb.ReadFile(v.Path); err != nil {
				return 0, err
			}
			if _, err := onnxpb.UnmarshalDir(b, v.Path, filepath.Dir(v.Path)); err != nil { // our checks, as Load makes them
				return 0, err
			}
		}
		sess, err := ort.NewSession(b, ort.Options{Threads: c.Threads, Unoptimized: c.ExactInt8})
		if err != nil {
			return 0, fmt.Errorf("pipeline: exported model %q does not load in onnxruntime: %w", v.Path, err)
		}
		sessions = append(sessions, sess)
		ops, err := ort.OptimizedOps(b, ort.Options{Threads: c.Threads})
		if err != nil {
			return 0, fmt.Errorf("pipeline: exported model %q: %w", v.Path, err)
		}
		v.Int8Nodes, v.FloatConvs = 0, ops["Conv"]+ops["FusedConv"]
		for op, n := range ops {
			if strings.HasPrefix(op, "QLinear") || op == "QGemm" || op == "MatMulIntegerToFloat" {
				v.Int8Nodes += n
			}
		}
		if v.Evaluated != nil {
			v.RecallAt1, v.NMI = v.Evaluated.RecallAt1, v.Evaluated.NMI
			continue
		}
		v.Scored = fmt.Sprintf("onnxruntime on the %d evaluation images", len(c.Eval.Items))
		dim := int(sess.OutputShape()[0])
		emb := make([]float32, len(c.Eval.Items)*dim)
		chw := c.Eval.Pre.Size()
		for batch := range data.Batches(ctx, c.Eval.DS, c.Eval.Items, c.Eval.Pre, timingBatch, c.Eval.Workers) {
			if batch.Err != nil {
				return 0, batch.Err
			}
			if err := sess.Run(batch.Data[:batch.N*chw], batch.N, emb[batch.Start*dim:]); err != nil {
				return 0, fmt.Errorf("pipeline: running %q: %w", v.Path, err)
			}
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		res, err := metrics.Evaluate(emb, len(c.Eval.Items), dim, labels, metrics.Options{KMeansRestarts: c.KMeansRestarts, Seed: c.Seed,
			Progress: EvalProgress(c.Progress, v.Path)})
		if err != nil {
			return 0, fmt.Errorf("pipeline: evaluating %q: %w", v.Path, err)
		}
		v.RecallAt1, v.NMI = res.RecallAt1, res.NMI
	}
	if c.Source != "" {
		b, err := onnxpb.ReadFile(c.Source)
		if err != nil {
			return 0, err
		}
		src, err := ort.NewSession(b, ort.Options{Threads: c.Threads})
		if err != nil {
			return 0, fmt.Errorf("pipeline: source backbone %q in onnxruntime: %w", c.Source, err)
		}
		sessions = append(sessions, src)
	}
	sample, err := timingImages(ctx, c.Eval)
	if err != nil {
		return 0, err
	}
	rates, lat, err := timeSessions(ctx, sessions, sample, c.Eval.Pre.Size())
	if err != nil {
		return 0, err
	}
	for i := range vs {
		vs[i].ImagesPerS, vs[i].LatencyMS = rates[i], lat[i]
	}
	if c.Source != "" {
		return rates[len(vs)], nil
	}
	return 0, nil
}

// timingImages preprocesses the first timingBatch evaluation images (repeated when fewer).
func timingImages(ctx context.Context, set ImageSet) ([]float32, error) {
	chw := set.Pre.Size()
	items := set.Items[:min(timingBatch, len(set.Items))]
	out := make([]float32, 0, timingBatch*chw)
	for batch := range data.Batches(ctx, set.DS, items, set.Pre, timingBatch, set.Workers) {
		if batch.Err != nil {
			return nil, batch.Err
		}
		out = append(out, batch.Data[:batch.N*chw]...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pipeline: no image to time the models on")
	}
	for len(out) < timingBatch*chw {
		out = append(out, out[:min(len(out), timingBatch*chw-len(out))]...)
	}
	return out, ctx.Err()
}

// timeSessions times each session on batches of timingBatch images and on single images, in
// turn for timingRounds rounds (so a machine busy with other work slows them alike; the order is
// reversed every other round, so that none always runs after the same model), and returns each
// one's median: images/s and milliseconds per single image. A model that pins its batch size runs
// as many of its batches as make timingBatch images (and one for the latency).
func timeSessions(ctx context.Context, sessions []*ort.Session, in []float32, chw int) ([]float64, []float64, error) {
	batchTimes := make([][]time.Duration, len(sessions))
	oneTimes := make([][]time.Duration, len(sessions))
	outs := make([][]float32, len(sessions))
	// run times n images (rounded up to whole pinned batches: n is 1 or a multiple of them).
	run := func(i, n int) (time.Duration, error) {
		s := sessions[i]
		t := time.Now()
		if f := s.FixedBatch(); f > 0 {
			for done := 0; done < n; done += f {
				if err := s.Run(in[:f*chw], f, outs[i]); err != nil {
					return 0, err
				}
			}
		} else if err := s.Run(in[:n*chw], n, outs[i]); err != nil {
			return 0, err
		}
		return time.Since(t), nil
	}
	for i, s := range sessions {
		outs[i] = make([]float32, max(timingBatch, s.FixedBatch())*int(prodInt(s.OutputShape())))
		if f := s.FixedBatch(); f > 1 && timingBatch%f != 0 {
			return nil, nil, fmt.Errorf("pipeline: timing: a model pins batch %d, which does not divide the %d timing images", f, timingBatch)
		}
		if _, err := run(i, timingBatch); err != nil { // warm-up
			return nil, nil, err
		}
	}
	for r := 0; r < timingRounds; r++ {
		for k := range sessions {
			i := k
			if r%2 == 1 {
				i = len(sessions) - 1 - k
			}
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
			d, err := run(i, timingBatch)
			if err != nil {
				return nil, nil, err
			}
			batchTimes[i] = append(batchTimes[i], d)
			for range latencyRuns {
				d, err := run(i, 1)
				if err != nil {
					return nil, nil, err
				}
				oneTimes[i] = append(oneTimes[i], d)
			}
		}
	}
	rates := make([]float64, len(sessions))
	lat := make([]float64, len(sessions))
	for i := range sessions {
		rates[i] = timingBatch / median(batchTimes[i]).Seconds()
		lat[i] = float64(median(oneTimes[i]).Microseconds()) / 1000
	}
	return rates, lat, nil
}

// median returns the middle of ds (the upper one of the two middles for an even count).
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func prodInt(dims []int64) int64 {
	p := int64(1)
	for _, d := range dims {
		p *= d
	}
	return p
}

// exportedEvaluation is the evaluation of the embeddings model.onnx was written from: the trained
// model's, or for raw features (chooseExport) the baseline's, flip averaged when evaluation is.
func (r *runner) exportedEvaluation() metrics.Result {
	if r.embeddingSource() != sourceRaw {
		return r.sum.Trained
	}
	if r.cfg.Backbone.FlipTTA && r.sum.BaselineTTA != nil {
		return *r.sum.BaselineTTA
	}
	return r.sum.Baseline
}

// exportVariants writes the deployable variants the export section asks for beside the checked
// model.onnx, built (rewritten without or with the mirror pass when export.flip_tta differs from
// evaluation's), then scores and times each one beside the source backbone.
func (r *runner) exportVariants(ctx context.Context, built builtModel) error {
	cfg, log := r.cfg, r.env.Log
	flip := cfg.Backbone.FlipTTA
	if cfg.Export.FlipTTA != nil {
		flip = *cfg.Export.FlipTTA
	}
	path, m := built.path, built.model
	var err error
	// model.onnx as checked (r.export) is the model the run evaluated: scoring it again in
	// onnxruntime on every evaluation image would repeat that evaluation.
	evaluated := r.exportedEvaluation()
	vs := []ExportVariant{{Path: path, FlipTTA: flip, Evaluated: &evaluated,
		Scored: fmt.Sprintf("the run's evaluation of the same model (checked in onnxruntime on %d evaluation images, max |diff| %.2g)", r.sum.Export.CheckedRows, r.sum.Export.MaxAbsDiff)}}
	if flip != export.HasFlip(m) {
		vs[0].Evaluated, vs[0].Scored = nil, ""
		if m, err = export.SetFlip(m, flip); err != nil {
			return err
		}
		if built, err = saveModel(path, m); err != nil {
			return err
		}
	}
	written := map[string][]byte{path: built.bytes}
	var q *onnx.ModelProto // the int8 variant, when asked for and the model has ops to quantize
	var info *VariantInfo
	var qo VariantOptions
	if cfg.Export.Int8 {
		cal := ImageSet{DS: r.ds, Items: CalibrationSample(r.split.fitIdx, cfg.Export.CalibrationImages, cfg.Seed), Pre: r.pre, Workers: cfg.Preprocess.Workers}
		qo = VariantOptions{Int8: true, FlipTTA: flip, ReduceRange: cfg.Export.ReduceRange,
			Calibration: cfg.Export.Calibration, WeightRounding: cfg.Export.WeightRounding, BiasCorrection: &cfg.Export.BiasCorrection,
			Threads: cfg.Threads, Log: log.Info}
		q, info, err = MakeVariant(ctx, m, qo, cal)
		if errors.Is(err, ErrNothingToQuantize) {
			w := err.Error() + ": model-int8.onnx not written"
			log.Warn(w)
			r.sum.Warnings = append(r.sum.Warnings, w)
			q = nil
		} else if err != nil {
			return err
		}
	}
	if q != nil {
		for _, w := range info.Warnings {
			log.Warn(w)
			r.sum.Warnings = append(r.sum.Warnings, w)
		}
		qpath := filepath.Join(filepath.Dir(path), "model-int8.onnx")
		qb, err := saveModel(qpath, q)
		if err != nil {
			return err
		}
		written[qpath] = qb.bytes
		vs = append(vs, info.Variant(qpath, qo))
	}
	src, err := MeasureVariants(ctx, vs, VariantCheck{
		Eval:    ImageSet{DS: r.ds, Items: r.split.evalIdx, Pre: r.pre, Workers: cfg.Preprocess.Workers},
		Threads: cfg.Threads, KMeansRestarts: cfg.Eval.KMeansRestarts, Seed: cfg.Seed, Source: cfg.Backbone.Path, Progress: r.env.Progress,
		Written: written})
	if err != nil {
		return err
	}
	r.sum.Export.Variants, r.sum.Export.SourceBackboneImagesPerS = vs, src
	for _, v := range vs {
		log.Info("export variant", "path", v.Path, "int8", v.Int8, "flip_tta", v.FlipTTA, "recall_at_1", v.RecallAt1, "nmi", v.NMI,
			"images_per_s", v.ImagesPerS, "latency_ms", v.LatencyMS, "int8_nodes", v.Int8Nodes, "float_convs", v.FloatConvs)
	}
	log.Info("source backbone", "path", cfg.Backbone.Path, "images_per_s", src)
	return nil
}
