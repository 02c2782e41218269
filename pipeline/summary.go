package pipeline

import (
	"fmt"
	"io"
	"path/filepath"
	"runtime"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/metrics"
	"github.com/grouploss/pipeline/pipeline/train"
)

// Version is the tool's version, recorded in exported models and metrics.json.
const Version = "0.1.0"

// Summary is the outcome of a run, written as metrics.json in the run folder.
type Summary struct {
	// Status is "ok", "failed" or "interrupted"; Error is the error of a run that did not succeed.
	Status   string         `json:"status"`
	Error    string         `json:"error,omitempty"`
	RunDir   string         `json:"run_dir"`
	Baseline metrics.Result `json:"baseline"`
	// BaselineTTA is the raw features averaged with their mirror's (with backbone.flip_tta),
	// the fair reference for a flip-averaged trained model.
	BaselineTTA *metrics.Result `json:"baseline_flip_tta,omitempty"`
	Trained     metrics.Result  `json:"trained"`
	Export      ExportSummary   `json:"export"`
	Timing      Timing          `json:"timing"`
	Machine     Machine         `json:"machine"`
	Data        DataSummary     `json:"data"`
	Training    TrainSummary    `json:"training"`
	Warnings    []string        `json:"warnings,omitempty"`
	// Adaptations are the defaults changed to fit the data before extraction (see adaptToData).
	Adaptations []config.Adaptation `json:"adaptations,omitempty"`
	// Choice says whether model.onnx embeds the trained model or the raw features, and why.
	Choice  *ExportChoice `json:"export_choice,omitempty"`
	Version string        `json:"tool_version"`
	// Report is the run's report.html (metrics, training curves, retrieval examples), "" when
	// it was not written.
	Report string `json:"report"`
	// Tail describes the fine-tuned backbone part (backbone.train_blocks > 0 or trainable_from).
	Tail *TailSummary `json:"tail,omitempty"`
	// Members are the heads of a naive ensemble (config ensemble > 1), each evaluated on its own;
	// Trained is then the ensemble's.
	Members []MemberSummary `json:"members,omitempty"`
}

// ExportSummary describes the exported ONNX model and its check against onnxruntime.
type ExportSummary struct {
	Path         string  `json:"path"`
	MaxAbsDiff   float64 `json:"max_abs_diff"`
	CheckedRows  int     `json:"checked_images"`
	EmbeddingDim int     `json:"embedding_dim"`
	// EmbeddingSource is "trained" or "raw_features" (see ExportChoice).
	EmbeddingSource string `json:"embedding_source"`
	// Variants are the deployable models written (model.onnx first), each scored and timed;
	// SourceBackboneImagesPerS is the source backbone file timed in the same rounds.
	Variants                 []ExportVariant `json:"variants,omitempty"`
	SourceBackboneImagesPerS float64         `json:"source_backbone_images_per_s,omitempty"`
}

// Timing holds the speed numbers of a run.
type Timing struct {
	ExtractImagesPerS float64 `json:"extract_images_per_s"`
	ExtractSeconds    float64 `json:"extract_seconds"`
	FeatureCacheHit   bool    `json:"feature_cache_hit"`
	TrainSeconds      float64 `json:"train_seconds"`
	Epochs            int     `json:"epochs"`
	SecondsPerEpoch   float64 `json:"seconds_per_epoch"`
	TotalSeconds      float64 `json:"total_seconds"`
}

// Machine records where the numbers were measured: int8 results depend on the CPU.
type Machine struct {
	CPU         string `json:"cpu"`
	AVX2        bool   `json:"avx2"`
	AVX512VNNI  bool   `json:"avx512_vnni"`
	AVXVNNI     bool   `json:"avx_vnni"`
	Cores       int    `json:"cores"`
	OnnxRuntime string `json:"onnxruntime_version"`
	GoVersion   string `json:"go_version"`
}

// ThisMachine describes this machine: the CPU, its cores, Go, and onnxruntime's version when this
// process has loaded it ("" otherwise).
func ThisMachine() Machine {
	cpu := backbone.CPU()
	return Machine{CPU: cpu.Model, AVX2: cpu.AVX2, AVX512VNNI: cpu.AVX512VNNI, AVXVNNI: cpu.AVXVNNI,
		Cores: runtime.NumCPU(), OnnxRuntime: backbone.RuntimeVersion(), GoVersion: runtime.Version()}
}

// DataSummary describes the split.
type DataSummary struct {
	Source            string `json:"source"`
	Images            int    `json:"images"`
	Classes           int    `json:"classes"`
	TrainClasses      int    `json:"train_classes"`
	ValidationClasses int    `json:"validation_classes"`
	EvalClasses       int    `json:"eval_classes"`
	TrainImages       int    `json:"train_images"`
	EvalImages        int    `json:"eval_images"`
	SkippedImages     int    `json:"skipped_images"` // undecodable images left out (on_bad_image skip)
	FeatureDim        int    `json:"feature_dim"`
	FeatureTensor     string `json:"feature_tensor"`
	// Dequantized: the int8 backbone ran as its float conversion (backbone.dequantize).
	Dequantized bool `json:"dequantized,omitempty"`
	// JPEGDecoder is data.JPEGDecoder() of the build that decoded the images.
	JPEGDecoder string `json:"jpeg_decoder"`
}

// TrainSummary is the training history and the model selection.
type TrainSummary struct {
	BestEpoch    int                `json:"best_epoch"`
	BestScore    float64            `json:"best_validation_score"`
	Selection    string             `json:"selection_metric"`
	Steps        int                `json:"steps"`
	BatchSize    int                `json:"batch_size"`
	SamplerNotes []string           `json:"sampler_notes,omitempty"`
	History      []train.EpochStats `json:"history"`
	// ResumedFromEpoch is the last epoch of the interrupted run that `pipeline run --resume`
	// continued from (0: trained from the start).
	ResumedFromEpoch int `json:"resumed_from_epoch,omitempty"`
}

// PrintTable writes a short human-readable table of the results.
func (s *Summary) PrintTable(w io.Writer) {
	fmt.Fprintf(w, "\n%-10s %7s %7s %7s %7s %7s %7s %7s\n", "", "R@1", "R@2", "R@4", "R@8", "NMI", "MAP@R", "RP")
	for _, r := range []struct {
		name string
		m    metrics.Result
	}{{"baseline", s.Baseline}, {"trained", s.Trained}} {
		if r.name == "trained" && s.BaselineTTA != nil {
			m := *s.BaselineTTA
			fmt.Fprintf(w, "%-10s %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f\n", "base+flip", 100*m.RecallAt1, 100*m.RecallAt2,
				100*m.RecallAt4, 100*m.RecallAt8, 100*m.NMI, 100*m.MAPAtR, 100*m.RPrecision)
		}
		if r.name == "trained" && s.Tail != nil { // the float model's untrained features
			m := s.Tail.BaselineFloat
			fmt.Fprintf(w, "%-10s %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f\n", "float", 100*m.RecallAt1, 100*m.RecallAt2,
				100*m.RecallAt4, 100*m.RecallAt8, 100*m.NMI, 100*m.MAPAtR, 100*m.RPrecision)
		}
		mark := ""
		if r.name == "trained" && s.Export.EmbeddingSource == sourceTrained {
			mark = "  <- model.onnx"
		}
		fmt.Fprintf(w, "%-10s %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f%s\n", r.name, 100*r.m.RecallAt1, 100*r.m.RecallAt2,
			100*r.m.RecallAt4, 100*r.m.RecallAt8, 100*r.m.NMI, 100*r.m.MAPAtR, 100*r.m.RPrecision, mark)
	}
	if c := s.Choice; c != nil {
		if c.Source == sourceRaw {
			fmt.Fprintf(w, "model.onnx embeds the RAW FEATURES (%s row), not the trained model:\n", map[bool]string{true: "base+flip", false: "baseline"}[s.BaselineTTA != nil])
		}
		fmt.Fprintf(w, "%s\n", c.Message)
	}
	fmt.Fprintf(w, "\nbest epoch %d of %d, train %.1fs, extraction %.1f images/s, export max |diff| %.2g\n",
		s.Training.BestEpoch, s.Timing.Epochs, s.Timing.TrainSeconds, s.Timing.ExtractImagesPerS, s.Export.MaxAbsDiff)
	if t := s.Tail; t != nil {
		fmt.Fprintf(w, "fine-tuned backbone from %q to %q (%d values), backbone lr %g\n", t.From, t.To, t.Params, t.BackboneLR)
	}
	fmt.Fprintf(w, "cpu: %s\nmodel: %s\n", s.Machine.CPU, s.Export.Path)
	for _, v := range s.Export.Variants {
		fmt.Fprintf(w, "  %s: %s\n", filepath.Base(v.Path), v.Describe())
	}
	if s.Export.SourceBackboneImagesPerS > 0 {
		fmt.Fprintf(w, "  source backbone: %.1f images/s (batch 32)\n", s.Export.SourceBackboneImagesPerS)
	}
	if s.Report != "" {
		fmt.Fprintf(w, "report: %s\n", s.Report)
	}
	fmt.Fprintf(w, "run folder: %s\n", s.RunDir)
}
