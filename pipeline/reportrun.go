package pipeline

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/report"
)

// reportFile is the name of the HTML report in the run folder.
const reportFile = "report.html"

// writeReport writes report.html into the run folder from the summary so far and the trained
// embeddings of the evaluated items (n×dim float32, rows in evalIdx order), and records its path
// in the summary. A report that cannot be written is a warning, not a failed run.
func (r *runner) writeReport(emb []float32, dim int, evalIdx []int) {
	path := filepath.Join(r.dir, reportFile)
	if err := report.Write(path, r.reportOf(emb, dim, evalIdx)); err != nil {
		w := fmt.Sprintf("%s not written: %v", reportFile, err)
		r.env.Log.Warn(w)
		r.sum.Warnings = append(r.sum.Warnings, w)
		return
	}
	r.sum.Report = path
	r.env.Log.Info("report", "path", path)
}

func (r *runner) reportOf(emb []float32, dim int, evalIdx []int) report.Report {
	s, cfg := r.sum, r.cfg
	yes := map[bool]string{true: "yes", false: "no"}
	info := []report.Field{
		{Name: "data", Value: fmt.Sprintf("%s: %d images of %d classes; trained on %d classes (%d of them for validation), evaluated on %d",
			s.Data.Source, s.Data.Images, s.Data.Classes, s.Data.TrainClasses, s.Data.ValidationClasses, s.Data.EvalClasses)},
		{Name: "backbone", Value: fmt.Sprintf("%s, features %q (%d-d)%s", cfg.Backbone.Path, s.Data.FeatureTensor, s.Data.FeatureDim,
			map[bool]string{true: ", flip averaged", false: ""}[cfg.Backbone.FlipTTA])},
		{Name: "machine", Value: fmt.Sprintf("%s, %d cores; AVX-512 VNNI: %s, AVX-VNNI: %s, AVX2: %s",
			s.Machine.CPU, s.Machine.Cores, yes[s.Machine.AVX512VNNI], yes[s.Machine.AVXVNNI], yes[s.Machine.AVX2])},
		{Name: "onnxruntime", Value: s.Machine.OnnxRuntime},
		{Name: "tool version", Value: fmt.Sprintf("%s (%s)", s.Version, s.Machine.GoVersion)},
		{Name: "extraction", Value: extraction(s.Timing)},
		{Name: "training", Value: fmt.Sprintf("%d epochs, %d steps, %.1f s (%.2f s per epoch); selection: %s, best epoch %d",
			s.Timing.Epochs, s.Training.Steps, s.Timing.TrainSeconds, s.Timing.SecondsPerEpoch, s.Training.Selection, s.Training.BestEpoch)},
		{Name: "exported model", Value: fmt.Sprintf("%s (%d-d embeddings; max |diff| to the in-process embeddings %.2g on %d images)",
			filepath.Join(cfg.Out, filepath.Base(s.Export.Path)), s.Export.EmbeddingDim, s.Export.MaxAbsDiff, s.Export.CheckedRows)},
		{Name: "run folder", Value: cfg.Out},
	}
	if c := s.Choice; c != nil {
		info = append(info, report.Field{Name: "model.onnx embeds", Value: c.Source + ": " + c.Message})
	}
	for _, a := range s.Adaptations {
		info = append(info, report.Field{Name: "adapted to the data", Value: fmt.Sprintf("%s %s -> %s: %s", a.Key, a.From, a.To, a.Why)})
	}
	info = append(info, variantFields(s.Export)...)
	rows := []report.Row{{Name: "baseline (raw features)", Result: s.Baseline}}
	if s.BaselineTTA != nil {
		rows = append(rows, report.Row{Name: "baseline, flip averaged", Result: *s.BaselineTTA})
	}
	trained := "trained (" + lossTitle(string(cfg.Loss.Name)) + " head)"
	if t := s.Tail; t != nil {
		base := "baseline, float backbone"
		if t.Prefix == string(config.TailPrefixInt8) {
			base = "baseline, int8 layers + float tail, untrained"
		}
		rows = append(rows, report.Row{Name: base, Result: t.BaselineFloat})
		trained = "trained (" + lossTitle(string(cfg.Loss.Name)) + ", backbone tail + head)"
		what := fmt.Sprintf("from %q to %q", t.From, t.To)
		if t.TrainBlocks > 0 {
			what = fmt.Sprintf("last %d block(s), %s", t.TrainBlocks, what)
		}
		info = slices.Insert(info, 2, report.Field{Name: "fine-tuned backbone",
			Value: fmt.Sprintf("%s: %d values, lr %g%s", what, t.Params, t.BackboneLR,
				tailSource(t))})
	}
	if len(s.Members) > 1 {
		trained = fmt.Sprintf("trained (%s, ensemble of %d heads)", lossTitle(string(cfg.Loss.Name)), len(s.Members))
	}
	rows = append(rows, report.Row{Name: trained, Result: s.Trained})

	paths := make([]string, len(evalIdx))
	for k, i := range evalIdx {
		paths[k] = r.ds.Resolve(i)
	}
	return report.Report{
		Title:    "Group Loss run " + filepath.Base(cfg.Out),
		Date:     time.Now(),
		Info:     info,
		Warnings: s.Warnings,
		Metrics:  rows,
		EvalNote: fmt.Sprintf("%d images of the %d classes never seen in training; NMI of k-means with one cluster per class.",
			len(evalIdx), s.Data.EvalClasses),
		History:   s.Training.History,
		ScoreName: scoreName(s),
		BestEpoch: s.Training.BestEpoch,
		Examples: report.Examples{Paths: paths, Labels: r.ds.Labels(evalIdx), Classes: classNames(r.ds),
			Emb: emb, Dim: dim},
	}
}

// scoreName names the validation score of the training history, "" when there was none.
func scoreName(s *Summary) string {
	sel := s.Training.Selection
	switch {
	case s.Data.ValidationClasses == 0 || sel == "" || strings.HasPrefix(sel, "none"):
		return ""
	case strings.HasPrefix(sel, "map_at_r"):
		return "validation MAP@R"
	case strings.HasPrefix(sel, "recall_at_1"):
		return "validation R@1"
	}
	return sel
}

// classNames returns the dataset's class names; a class labelled by an integer in a manifest is
// named by the folder its images share (images/Black_footed_Albatross/0001.jpg), when they do.
func classNames(ds *data.Dataset) []string {
	names := append([]string(nil), ds.Classes...)
	folder := make([]string, len(names))
	for _, it := range ds.Items {
		d := filepath.Base(filepath.Dir(it.Path))
		switch f := folder[it.Label]; {
		case d == "." || d == string(filepath.Separator):
			folder[it.Label] = "\x00" // no folder: keep the label
		case f == "":
			folder[it.Label] = d
		case f != d:
			folder[it.Label] = "\x00" // images of several folders
		}
	}
	for l, n := range names {
		if n == strconv.Itoa(l) && folder[l] != "" && folder[l] != "\x00" {
			names[l] = folder[l]
		}
	}
	return names
}

func extraction(t Timing) string {
	if t.FeatureCacheHit {
		return "features from the cache"
	}
	return fmt.Sprintf("%.1f images/s, %.1f s", t.ExtractImagesPerS, t.ExtractSeconds)
}

// variantFields describe the exported variants, one field each, and the source backbone's speed.
func variantFields(e ExportSummary) []report.Field {
	var out []report.Field
	for _, v := range e.Variants {
		out = append(out, report.Field{Name: "variant " + filepath.Base(v.Path), Value: v.Describe()})
	}
	if e.SourceBackboneImagesPerS > 0 {
		out = append(out, report.Field{Name: "source backbone", Value: fmt.Sprintf("%.1f images/s (batch 32), timed in the same rounds", e.SourceBackboneImagesPerS)})
	}
	return out
}

// tailSource says where the fine-tuned part's float weights and its input came from.
func tailSource(t *TailSummary) string {
	switch {
	case t.Prefix == string(config.TailPrefixInt8):
		return "; int8 converted to float after the cut, trained on the int8 layers' activations (tail_prefix int8)"
	case t.Dequantized:
		return "; int8 converted to float"
	}
	return ""
}
