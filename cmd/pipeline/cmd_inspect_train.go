package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/backbone/graph"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/weights"
)

// trainingInfo says which part of a model `pipeline run --train-blocks K` / `--trainable-from`
// could fine-tune: the ops between the input and the feature tensor, split into those the
// trainable-graph decoder (backbone/graph) handles and those it does not, after the int8 to float
// conversion when the model is quantized.
type trainingInfo struct {
	// Feature is the tensor the counts stop at (the automatic feature tensor).
	Feature string `json:"feature"`
	// Converted counts the quantized nodes converted to float (weights.DequantizeModel) by op.
	Converted map[string]int `json:"converted,omitempty"`
	// ConvertError is why the int8 model could not be converted (then nothing is trainable).
	ConvertError string `json:"convert_error,omitempty"`
	// Decodable and NotDecodable count the float model's nodes up to Feature by op type.
	Decodable    map[string]int `json:"decodable"`
	NotDecodable map[string]int `json:"not_decodable"`
	// CutPoints are the --train-blocks choices: CutPoints[K-1] is the tensor training starts
	// from with --train-blocks K (inverted-residual blocks found, last block first).
	CutPoints []string `json:"train_blocks_from"`
}

// inspectTraining computes the trainingInfo of m cut at feature (a tensor name of m).
func inspectTraining(m *onnx.ModelProto, quantized bool, feature string) *trainingInfo {
	ti := &trainingInfo{Feature: feature, Decodable: map[string]int{}, NotDecodable: map[string]int{}}
	if quantized {
		f, rep, err := weights.DequantizeModel(m)
		if err != nil {
			ti.ConvertError = err.Error()
			return ti
		}
		m, ti.Converted = f, rep.Converted
	}
	g := m.GetGraph()
	prod := onnxpb.Producers(g)
	// The nodes feature depends on, walking back from it.
	need := map[*onnx.NodeProto]bool{}
	stack := []string{feature}
	seen := map[string]bool{}
	for len(stack) > 0 {
		t := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[t] {
			continue
		}
		seen[t] = true
		n := prod[t]
		if n == nil || need[n] {
			continue
		}
		need[n] = true
		stack = append(stack, n.GetInput()...)
	}
	for _, n := range g.GetNode() {
		if !need[n] {
			continue
		}
		op := n.GetOpType()
		if d := n.GetDomain(); d != "" && d != "ai.onnx" {
			op = d + "." + op
		}
		if graph.Supports(op) {
			ti.Decodable[op]++
		} else {
			ti.NotDecodable[op]++
		}
	}
	ti.CutPoints = graph.TailCutPoints(m)
	return ti
}

// printTraining writes the training section of `pipeline inspect`.
func printTraining(w io.Writer, ti *trainingInfo) {
	fmt.Fprintf(w, "\ntraining (the ops up to %s that `run --train-blocks K` / `--trainable-from` would decode):\n", ti.Feature)
	if len(ti.Converted) > 0 {
		fmt.Fprintf(w, "  int8 -> float    %s\n", opCounts(ti.Converted))
	}
	if ti.ConvertError != "" {
		fmt.Fprintf(w, "  not trainable: the int8 -> float conversion fails: %s\n", ti.ConvertError)
		return
	}
	fmt.Fprintf(w, "  decodable        %s\n", orNone(opCounts(ti.Decodable)))
	fmt.Fprintf(w, "  not decodable    %s\n", orNone(opCounts(ti.NotDecodable)))
	if len(ti.NotDecodable) > 0 {
		fmt.Fprintf(w, "                   (a trained part must start after the last of these: --trainable-from TENSOR)\n")
	}
	switch n := len(ti.CutPoints); n {
	case 0:
		fmt.Fprintf(w, "  --train-blocks   no inverted-residual blocks found: use --trainable-from TENSOR\n")
	default:
		fmt.Fprintf(w, "  --train-blocks   1..%d (K=1 starts at %s", n, ti.CutPoints[0])
		if n > 1 {
			fmt.Fprintf(w, ", K=2 at %s", ti.CutPoints[1])
		}
		fmt.Fprintf(w, ", K=%d at %s)\n", n, ti.CutPoints[n-1])
	}
}

func opCounts(m map[string]int) string {
	ops := sortedKeys(m)
	slices.SortStableFunc(ops, func(a, b string) int { return m[b] - m[a] })
	parts := make([]string, len(ops))
	for i, op := range ops {
		parts[i] = fmt.Sprintf("%s %d", op, m[op])
	}
	return strings.Join(parts, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
