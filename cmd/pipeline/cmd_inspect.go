package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/grouploss/pipeline/pipeline/export"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// inspectOptions are the flags of `pipeline inspect`.
type inspectOptions struct {
	model   string
	jsonOut bool
}

func (o *inspectOptions) addFlags(fs *flag.FlagSet) {
	fs.BoolVar(&o.jsonOut, "json", false, "print the description as JSON (backbone.Info plus the CPU)")
}

// inspectReport is what `pipeline inspect --json` prints: the model description and the CPU it
// would run on.
type inspectReport struct {
	*backbone.Info
	CPU         backbone.CPUInfo
	Int8Warning string `json:",omitempty"`
	// Training is what tail fine-tuning could decode (nil when no feature tensor was found).
	Training *trainingInfo `json:",omitempty"`
}

func cmdInspect(_ context.Context, args []string, stdout, stderr io.Writer) error {
	var o inspectOptions
	fs := flag.NewFlagSet("pipeline inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.addFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: pipeline inspect MODEL.onnx [--json]\n\n"+
			"Describes an ONNX model without running it: inputs, outputs, opsets, producer, metadata, ops and\n"+
			"the candidate feature tensors (* marks the one `pipeline run` cuts at by default).\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err == flag.ErrHelp {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: inspect takes one MODEL.onnx argument, got %d", errUsage, len(pos))
	}
	o.model = pos[0]
	rep, err := runInspect(o.model, backbone.CPU())
	if err != nil {
		return err
	}
	if o.jsonOut {
		return writeJSON(stdout, rep)
	}
	printInspect(stdout, rep)
	return nil
}

// runInspect describes the model at path as it would run on cpu.
func runInspect(path string, cpu backbone.CPUInfo) (*inspectReport, error) {
	info, err := backbone.Inspect(path)
	if err != nil {
		return nil, err
	}
	rep := &inspectReport{Info: info, CPU: cpu, Int8Warning: backbone.Int8Warning(info, cpu)}
	if info.Auto != "" {
		m, err := onnxpb.Load(path)
		if err != nil {
			return nil, err
		}
		rep.Training = inspectTraining(m, info.Quantized, info.Auto)
	}
	return rep, nil
}

// printInspect writes the human-readable description.
func printInspect(w io.Writer, r *inspectReport) {
	info := r.Info
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "model\t%s\n", info.Path)
	fmt.Fprintf(tw, "size\t%s (sha256 %s)\n", byteSize(info.Size), info.SHA256)
	producer := info.Producer
	if producer == "" {
		producer = "(not recorded)"
	}
	fmt.Fprintf(tw, "producer\t%s\n", producer)
	var opsets []string
	for _, d := range sortedKeys(info.Opsets) {
		name := d
		if name == "" {
			name = "ai.onnx"
		}
		opsets = append(opsets, fmt.Sprintf("%s %d", name, info.Opsets[d]))
	}
	fmt.Fprintf(tw, "ir / opsets\t%d / %s\n", info.IRVersion, strings.Join(opsets, ", "))
	for i, t := range info.Inputs {
		fmt.Fprintf(tw, "%s\t%s %s %s\n", groupLabel(i, "inputs"), t.Name, t.DType, t.ShapeString())
	}
	for i, t := range info.Outputs {
		fmt.Fprintf(tw, "%s\t%s %s %s\n", groupLabel(i, "outputs"), t.Name, t.DType, t.ShapeString())
	}
	keys := sortedKeys(info.Metadata)
	if len(keys) == 0 {
		fmt.Fprintf(tw, "metadata\t(none)\n")
	}
	for i, k := range keys {
		fmt.Fprintf(tw, "%s\t%s = %s\n", groupLabel(i, "metadata"), k, info.Metadata[k])
	}
	int8 := "no"
	switch {
	case info.Metadata[export.MetaQuantization] != "":
		int8 = int8Summary(info.Metadata)
	case info.Quantized:
		int8 = "yes (QLinear*/integer ops)"
	}
	fmt.Fprintf(tw, "nodes\t%d, int8: %s\n", info.Nodes, int8)
	ops := sortedKeys(info.Ops)
	sort.SliceStable(ops, func(i, j int) bool { return info.Ops[ops[i]] > info.Ops[ops[j]] })
	var hist []string
	for _, op := range ops {
		hist = append(hist, fmt.Sprintf("%s %d", op, info.Ops[op]))
	}
	for i := 0; i < len(hist); i += 6 {
		fmt.Fprintf(tw, "%s\t%s\n", groupLabel(i, "ops"), strings.Join(hist[i:min(i+6, len(hist))], ", "))
	}
	fmt.Fprintf(tw, "cpu\t%s\n", cpuLine(r.CPU))
	tw.Flush()

	fmt.Fprintln(w)
	if len(info.Features) == 0 {
		fmt.Fprintln(w, "feature tensors: none found (no pooled output or classifier input)")
	} else {
		fmt.Fprintln(w, "feature tensors (* = automatic choice of `pipeline run`):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "\ttensor\top\trole\tshape\tdim\tdtype")
		for _, c := range info.Features {
			mark := ""
			if c.Auto {
				mark = "*"
			}
			role := c.Role
			if c.ClassifierInput && c.Role != backbone.RoleClassifierInput {
				role += ", classifier input"
			}
			shape, dim := "unknown", "?"
			if c.Shape != nil {
				shape = dimsString(c.Shape)
			}
			if c.Dim > 0 {
				dim = fmt.Sprint(c.Dim)
			}
			dtype := "float32"
			if c.Quantized {
				dtype = fmt.Sprintf("8-bit quantized (scale %s, zero point %s)", c.Scale, c.ZeroPoint)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mark, c.Tensor, c.Op, role, shape, dim, dtype)
		}
		tw.Flush()
	}
	if r.Training != nil {
		printTraining(w, r.Training)
	}
	if r.Int8Warning != "" {
		fmt.Fprintln(w, "\nwarning:", r.Int8Warning)
	}
}

// groupLabel returns title for the first line of a group and "" for the following ones.
func groupLabel(i int, title string) string {
	if i == 0 {
		return title
	}
	return ""
}

func cpuLine(c backbone.CPUInfo) string {
	if !c.X86 {
		return c.Model + " (not x86: AVX2/VNNI do not apply)"
	}
	return fmt.Sprintf("%s (AVX2 %s, VNNI %s)", c.Model, yesNo(c.AVX2), yesNo(c.VNNI()))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// dimsString formats a shape, "?" for dynamic (-1) axes.
func dimsString(s []int64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		if d < 0 {
			parts[i] = "?"
		} else {
			parts[i] = fmt.Sprint(d)
		}
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// int8Summary describes a model quantized by our export from its metadata: the scheme and the
// CPUs it was made for (7-bit weights for x86 without VNNI).
func int8Summary(meta map[string]string) string {
	s := "yes (" + meta[export.MetaQuantization] + ", " + meta[export.MetaWeights]
	if meta[export.MetaReduceRange] == "true" {
		s += ", reduce range: 7-bit weights for x86 CPUs without VNNI"
	} else {
		s += ", 8-bit weights: for CPUs with VNNI (u8s8 sums saturate on x86 without it)"
	}
	if c := meta["quantization.calibration"]; c != "" {
		s += ", calibration " + c
	}
	if strings.HasPrefix(meta[export.MetaRounding], "gptq") {
		s += ", 1x1 Conv weights rounded with error feedback (gptq)"
	}
	if meta[export.MetaBiasCorrection] != "" {
		s += ", bias-corrected features"
	}
	return s + ")"
}
