// Command gen writes testdata/tiny_cnn.onnx: a float32 CNN with input "pixels" [1,3,6,6] (batch
// pinned to 1, also in value_info), Conv(3->4, 3x3, pad 1, bias) -> Relu -> GlobalAveragePool ->
// Flatten -> Gemm(4->3, transB=1) -> output "logits" [1,3]; opset 12, deterministic weights.
//
// Run from the backbone directory: go run ./testdata/gen (or go generate).
package main

import (
	"fmt"
	"math"
	"os"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

func values(n int, seed float64, scale, offset float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = offset + scale*float32(math.Sin(seed+1.37*float64(i)+0.11*float64(i*i%7)))
	}
	return v
}

func main() {
	out := "testdata/tiny_cnn.onnx"
	if len(os.Args) > 1 {
		out = os.Args[1]
	}
	g := &onnx.GraphProto{
		Name: "tiny_cnn",
		Node: []*onnx.NodeProto{
			onnxpb.Node("Conv", "conv", []string{"pixels", "conv.w", "conv.b"}, []string{"conv_out"},
				onnxpb.AttrInts("kernel_shape", 3, 3), onnxpb.AttrInts("pads", 1, 1, 1, 1),
				onnxpb.AttrInts("strides", 1, 1)),
			onnxpb.Node("Relu", "relu", []string{"conv_out"}, []string{"relu_out"}),
			onnxpb.Node("GlobalAveragePool", "pool", []string{"relu_out"}, []string{"pooled"}),
			onnxpb.Node("Flatten", "flatten", []string{"pooled"}, []string{"flat"}, onnxpb.AttrInt("axis", 1)),
			onnxpb.Node("Gemm", "fc", []string{"flat", "fc.w", "fc.b"}, []string{"logits"}, onnxpb.AttrInt("transB", 1)),
		},
		Initializer: []*onnx.TensorProto{
			onnxpb.FloatTensor("conv.w", []int64{4, 3, 3, 3}, values(4*3*3*3, 0.3, 0.4, 0)),
			// Biases of both signs so that Relu zeroes some activations.
			onnxpb.FloatTensor("conv.b", []int64{4}, []float32{0.1, -0.6, 0.05, -0.2}),
			onnxpb.FloatTensor("fc.w", []int64{3, 4}, values(3*4, 1.1, 0.8, 0)),
			onnxpb.FloatTensor("fc.b", []int64{3}, []float32{0.01, -0.02, 0.03}),
		},
		Input:  []*onnx.ValueInfoProto{onnxpb.ValueInfo("pixels", onnxpb.Float, 1, 3, 6, 6)},
		Output: []*onnx.ValueInfoProto{onnxpb.ValueInfo("logits", onnxpb.Float, 1, 3)},
		ValueInfo: []*onnx.ValueInfoProto{
			onnxpb.ValueInfo("conv_out", onnxpb.Float, 1, 4, 6, 6),
			onnxpb.ValueInfo("relu_out", onnxpb.Float, 1, 4, 6, 6),
			onnxpb.ValueInfo("pooled", onnxpb.Float, 1, 4, 1, 1),
			onnxpb.ValueInfo("flat", onnxpb.Float, 1, 4),
		},
	}
	m := &onnx.ModelProto{
		IrVersion:       7,
		OpsetImport:     []*onnx.OperatorSetIdProto{{Domain: "", Version: 12}},
		ProducerName:    "grouploss-testdata-gen",
		ProducerVersion: "1",
		Graph:           g,
		MetadataProps:   []*onnx.StringStringEntryProto{{Key: "purpose", Value: "backbone tests"}},
	}
	if err := onnxpb.SaveAtomic(out, m); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
