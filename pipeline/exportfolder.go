package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
)

// FolderExport says which variant ExportFromRun makes from a run folder's model.onnx.
type FolderExport struct {
	Out     string // the file to write; refused when it exists unless Force
	Force   bool
	Variant VariantOptions
	// CalibrationImages overrides the run's export.calibration_images when > 0.
	CalibrationImages int
	// KMeansRestarts overrides the run's eval.kmeans_restarts (NMI) when > 0.
	KMeansRestarts int
	// ExactInt8 scores the variant as CPUs with VNNI compute it (VariantCheck.ExactInt8).
	ExactInt8   bool
	LibraryPath string // onnxruntime; "" resolves it as the run does
	Log         *slog.Logger
	Progress    io.Writer
}

// FolderExportResult is the written and measured variant.
type FolderExportResult struct {
	Run                      string        `json:"run"`
	Variant                  ExportVariant `json:"variant"`
	SourceBackbone           string        `json:"source_backbone"`
	SourceBackboneImagesPerS float64       `json:"source_backbone_images_per_s"`
	Warnings                 []string      `json:"warnings,omitempty"`
}

// ExportFromRun writes a variant of the run folder's checked model.onnx to o.Out with the checks of
// a run's export: the run's config.yaml gives the data, class split and preprocessing; int8
// calibrates on its training images; the variant is reloaded (our checks, onnxruntime), scored on
// its evaluation classes and timed beside the source backbone. The file appears only once all of
// that succeeded.
func ExportFromRun(ctx context.Context, runDir string, o FolderExport) (*FolderExportResult, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Out == "" {
		return nil, fmt.Errorf("%w: export: no output file", config.ErrInvalid)
	}
	src := filepath.Join(runDir, "model.onnx")
	if abs(o.Out) == abs(src) {
		return nil, fmt.Errorf("%w: export: --out %q is the run's own model.onnx", config.ErrInvalid, o.Out)
	}
	if _, err := os.Stat(o.Out); err == nil && !o.Force {
		return nil, fmt.Errorf("%w: export: %q exists (--force replaces it)", config.ErrInvalid, o.Out)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("export: %w", err)
	}
	for _, f := range []string{"model.onnx", "config.yaml"} {
		if _, err := os.Stat(filepath.Join(runDir, f)); err != nil {
			return nil, fmt.Errorf("%w: export: %q is not a run folder of `pipeline run`: no %s (%v)", config.ErrInvalid, runDir, f, err)
		}
	}
	cfg, err := config.LoadConfig(filepath.Join(runDir, "config.yaml"))
	if err != nil {
		return nil, fmt.Errorf("export: run folder %q: %w", runDir, err)
	}
	m, err := onnxpb.Load(src)
	if err != nil {
		return nil, fmt.Errorf("export: run folder %q: %w", runDir, err)
	}
	ds, err := data.Load(cfg.Data)
	if err != nil {
		return nil, dataHint(err)
	}
	pre, err := cfg.Preprocess.ToData()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", config.ErrInvalid, err)
	}
	split, err := splitClasses(ds, cfg.TrainClasses, cfg.ValidationClasses, cfg.Seed)
	if err != nil {
		return nil, err
	}
	if err := ort.Init(ort.LibraryPath(firstNonEmpty(o.LibraryPath, cfg.OnnxRuntime))); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	vo := o.Variant
	if vo.ReduceRange == "" {
		vo.ReduceRange = cfg.Export.ReduceRange
	}
	if vo.Calibration == "" {
		vo.Calibration = cfg.Export.Calibration
	}
	if vo.WeightRounding == "" {
		vo.WeightRounding = cfg.Export.WeightRounding
	}
	if vo.BiasCorrection == nil {
		vo.BiasCorrection = &cfg.Export.BiasCorrection
	}
	if vo.Threads == 0 {
		vo.Threads = cfg.Threads
	}
	if vo.Log == nil {
		vo.Log = log.Info
	}
	n := cfg.Export.CalibrationImages
	if o.CalibrationImages > 0 {
		n = o.CalibrationImages
	}
	cal := ImageSet{DS: ds, Items: CalibrationSample(split.fitIdx, n, cfg.Seed), Pre: pre, Workers: cfg.Preprocess.Workers}
	v, info, err := MakeVariant(ctx, m, vo, cal)
	if err != nil {
		return nil, err
	}
	for _, w := range info.Warnings {
		log.Warn(w)
	}
	// Written beside the target, measured, then renamed over it.
	tmp, err := os.CreateTemp(filepath.Dir(o.Out), ".export-*.onnx")
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	if err := onnxpb.SaveAtomic(tmp.Name(), v); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	vs := []ExportVariant{info.Variant(tmp.Name(), vo)}
	if o.KMeansRestarts > 0 {
		cfg.Eval.KMeansRestarts = o.KMeansRestarts
	}
	rate, err := MeasureVariants(ctx, vs, VariantCheck{
		Eval:    ImageSet{DS: ds, Items: split.evalIdx, Pre: pre, Workers: cfg.Preprocess.Workers},
		Threads: vo.Threads, KMeansRestarts: cfg.Eval.KMeansRestarts, Seed: cfg.Seed, Source: cfg.Backbone.Path, Progress: o.Progress,
		ExactInt8: o.ExactInt8})
	if err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), o.Out); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	vs[0].Path = o.Out
	return &FolderExportResult{Run: runDir, Variant: vs[0], SourceBackbone: cfg.Backbone.Path, SourceBackboneImagesPerS: rate, Warnings: info.Warnings}, nil
}

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
