package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/export"
)

// exportOptions are the flags of `pipeline export`: one field per flag, added in addFlags.
type exportOptions struct {
	run               string
	out               string
	force             bool
	int8              bool
	flipTTA           bool
	reduceRange       string
	calibration       string
	calibrationImages int
	biasCorrection    string
	weightRounding    string
	threads           int
	kmeansRestarts    int
	exactInt8         bool
	onnxruntime       string
	jsonOut           bool
	verbose           bool
}

func (o *exportOptions) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.run, "run", "", "run `FOLDER` (its model.onnx, config.yaml: data, class split, preprocessing)")
	fs.StringVar(&o.out, "out", "", "model `FILE` to write")
	fs.BoolVar(&o.force, "force", false, "replace an existing --out file")
	fs.BoolVar(&o.int8, "int8", false, "quantize: int8 weights per channel, uint8 activations calibrated on training images (QDQ)")
	fs.BoolVar(&o.flipTTA, "flip-tta", true, "run the mirror pass (each image and its mirror, features averaged: twice the cost)")
	fs.StringVar(&o.reduceRange, "reduce-range", "", "with --int8: auto (7-bit weights when this CPU is x86 without VNNI), true or false (default: the run's export.reduce_range)")
	fs.StringVar(&o.calibration, "calibration", "", "with --int8: minmax, percentile or entropy (default: the run's export.calibration)")
	fs.IntVar(&o.calibrationImages, "calibration-images", 0, "with --int8: training images to calibrate on (default: the run's export.calibration_images)")
	fs.StringVar(&o.biasCorrection, "bias-correction", "", "with --int8: true or false, add back the shift of the int8 features' mean measured on the calibration images\n"+
		"(default: the run's export.bias_correction)")
	fs.StringVar(&o.weightRounding, "weight-rounding", "", "with --int8: nearest, or gptq (1x1 Convs rounded with error feedback on the calibration inputs)\n"+
		"(default: the run's export.weight_rounding)")
	fs.IntVar(&o.threads, "threads", 0, "onnxruntime intra-op threads (default: the run's)")
	fs.IntVar(&o.kmeansRestarts, "kmeans-restarts", 0, "k-means++ restarts for NMI (default: the run's eval.kmeans_restarts)")
	onnxruntimeFlag(fs, &o.onnxruntime)
	fs.BoolVar(&o.exactInt8, "exact-int8", false, "score with onnxruntime's graph optimizations off: exact int8 arithmetic, as CPUs with VNNI compute it,\n"+
		"simulated here (no u8s8 saturation); the timing is then not meaningful")
	fs.BoolVar(&o.jsonOut, "json", false, "print the result as JSON")
	fs.BoolVar(&o.verbose, "v", false, "log progress")
}

// cmdExport is `pipeline export`: a variant of a run's model (--run), or a Triton model repository
// for a model file (--triton, cmd_export_triton.go); the two take different flags.
func cmdExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if hasFlag(args, "triton") {
		return cmdExportTriton(ctx, args, stdout, stderr)
	}
	var o exportOptions
	fs := newFlagSet("pipeline export", stderr, "usage: pipeline export --run RUN_FOLDER [--int8] [--flip-tta=false] --out FILE [flags]\n"+
		"       pipeline export --model MODEL.onnx --triton DIR [--name NAME] [--max-batch N]\n\n"+
		"Writes a variant of a run's model.onnx (with or without the mirror pass, float or int8), reloads it in\n"+
		"onnxruntime, scores it on the run's evaluation classes and times it beside the source backbone.\n\n")
	o.addFlags(fs)
	if help, err := parseFlags(fs, args, ""); help || err != nil {
		return err
	}
	switch {
	case o.run == "" || o.out == "":
		return fmt.Errorf("%w: export needs --run RUN_FOLDER and --out FILE", errUsage)
	case !o.int8 && (o.reduceRange != "" || o.calibration != "" || o.calibrationImages != 0 || o.biasCorrection != "" || o.weightRounding != ""):
		return fmt.Errorf("%w: --reduce-range, --calibration, --calibration-images, --weight-rounding and --bias-correction go with --int8", errUsage)
	case o.weightRounding != "" && config.WeightRounding(o.weightRounding) != config.WeightRoundingGPTQ && config.WeightRounding(o.weightRounding) != config.WeightRoundingNearest:
		return fmt.Errorf("%w: --weight-rounding %q: want nearest or gptq", errUsage, o.weightRounding)
	case o.biasCorrection != "" && o.biasCorrection != "true" && o.biasCorrection != "false":
		return fmt.Errorf("%w: --bias-correction %q: want true or false", errUsage, o.biasCorrection)
	case o.reduceRange != "" && config.ReduceRange(o.reduceRange) != config.ReduceRangeAuto && config.ReduceRange(o.reduceRange) != config.ReduceRangeOn && config.ReduceRange(o.reduceRange) != config.ReduceRangeOff:
		return fmt.Errorf("%w: --reduce-range %q: want auto, true or false", errUsage, o.reduceRange)
	case o.calibration != "" && !validCalibration(o.calibration):
		return fmt.Errorf("%w: --calibration %q: want one of %v", errUsage, o.calibration, export.CalibrationMethods)
	case o.calibrationImages < 0 || o.kmeansRestarts < 0:
		return fmt.Errorf("%w: --calibration-images and --kmeans-restarts want >= 1 (0: the run's)", errUsage)
	}
	var bias *bool
	if o.biasCorrection != "" {
		on := o.biasCorrection == "true"
		bias = &on
	}
	log := textLogger(stderr, o.verbose, slog.LevelWarn, slog.LevelInfo)
	res, err := pipeline.ExportFromRun(ctx, o.run, pipeline.FolderExport{Out: o.out, Force: o.force,
		Variant: pipeline.VariantOptions{Int8: o.int8, FlipTTA: o.flipTTA, ReduceRange: config.ReduceRange(o.reduceRange), Calibration: config.Calibration(o.calibration),
			WeightRounding: config.WeightRounding(o.weightRounding), BiasCorrection: bias, Threads: o.threads},
		CalibrationImages: o.calibrationImages, KMeansRestarts: o.kmeansRestarts, ExactInt8: o.exactInt8, LibraryPath: o.onnxruntime, Log: log, Progress: stderr})
	if err != nil {
		return err
	}
	if o.jsonOut {
		return writeJSON(stdout, res)
	}
	printVariants(stdout, []pipeline.ExportVariant{res.Variant}, res.SourceBackbone, res.SourceBackboneImagesPerS)
	return nil
}

func validCalibration(m string) bool {
	for _, c := range export.CalibrationMethods {
		if c == m {
			return true
		}
	}
	return false
}

// printVariants writes one line per variant and the source backbone's speed.
func printVariants(w io.Writer, vs []pipeline.ExportVariant, source string, sourceRate float64) {
	for _, v := range vs {
		fmt.Fprintf(w, "%s: %s\n", v.Path, v.Describe())
	}
	fmt.Fprintf(w, "source backbone %s: %.1f images/s (batch 32), timed in the same rounds\n", source, sourceRate)
}
