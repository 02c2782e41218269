package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// TestInspectTrainingInt8: on the shared int8 MobileNetV2, every node up to the pooled features
// converts to float and decodes, and the 17 inverted-residual blocks are offered to
// --train-blocks, the last one starting at 452_quantized (the cut tensor tail training uses).
func TestInspectTrainingInt8(t *testing.T) {
	model := filepath.Join(sharedDir(t), "models", "mobilenetv2-12-int8.onnx")
	r := toolRun("inspect", model)
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	rep, err := runInspect(model, backbone.CPUInfo{})
	if err != nil {
		t.Fatal(err)
	}
	ti := rep.Training
	if ti == nil {
		t.Fatal("no training section")
	}
	if ti.Converted["QLinearConv"] != 52 || ti.Decodable["Conv"] != 52 || ti.Decodable["GlobalAveragePool"] != 1 {
		t.Errorf("converted %v, decodable %v: want 52 QLinearConv -> 52 Conv and the pooling", ti.Converted, ti.Decodable)
	}
	if len(ti.NotDecodable) != 0 || ti.ConvertError != "" {
		t.Errorf("not decodable %v, convert error %q: want none", ti.NotDecodable, ti.ConvertError)
	}
	if len(ti.CutPoints) != 17 || ti.CutPoints[0] != "452_quantized" {
		t.Errorf("cut points %v: want 17, the first 452_quantized", ti.CutPoints)
	}
	for _, want := range []string{"decodable        Clip 64, Conv 52", "not decodable    (none)", "--train-blocks   1..17 (K=1 starts at 452_quantized"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
}

// TestInspectTrainingUnsupported: an op the decoder does not have is listed as not decodable,
// and a model without inverted-residual blocks points to --trainable-from.
func TestInspectTrainingUnsupported(t *testing.T) {
	m, err := onnxpb.Load(toolTinyCNN)
	if err != nil {
		t.Fatal(err)
	}
	info, err := backbone.Inspect(toolTinyCNN)
	if err != nil {
		t.Fatal(err)
	}
	ti := inspectTraining(m, false, info.Auto)
	if ti.Decodable["Conv"] != 1 || ti.Decodable["Relu"] != 1 || len(ti.NotDecodable) != 0 || len(ti.CutPoints) != 0 {
		t.Fatalf("tiny CNN: %+v", ti)
	}
	renamed := false
	for _, n := range m.GetGraph().GetNode() {
		if n.GetOpType() == "Relu" {
			n.OpType, renamed = "Softsign", true
		}
	}
	if !renamed {
		t.Fatal("tiny CNN has no Relu")
	}
	ti = inspectTraining(m, false, info.Auto)
	if ti.NotDecodable["Softsign"] != 1 || ti.Decodable["Relu"] != 0 {
		t.Errorf("decodable %v, not decodable %v: want Softsign not decodable", ti.Decodable, ti.NotDecodable)
	}
	var b strings.Builder
	printTraining(&b, ti)
	for _, want := range []string{"not decodable    Softsign 1", "--trainable-from TENSOR", "no inverted-residual blocks"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}
