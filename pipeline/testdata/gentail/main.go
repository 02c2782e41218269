// Command gentail writes testdata/tiny_blocks.onnx: a float32 MobileNetV2 in miniature for the
// tail fine-tuning tests. Input "pixels" [batch,3,8,8]; stem Conv 3x3 stride 2 (3->8) + Clip(0,6)
// -> "stem" [8,4,4]; block 1: 1x1 Conv 8->16 + Clip, depthwise 3x3 Conv (group 16) + Clip, 1x1
// Conv 16->8, residual Add -> "block1"; block 2: 1x1 Conv 8->16 + Clip, depthwise 3x3 + Clip,
// 1x1 Conv 16->12 -> "block2" (no residual); final 1x1 Conv 12->20 + Clip -> GlobalAveragePool
// "pooled" [20,1,1] (the feature tensor) -> Flatten -> Gemm(20->5) "logits". Every Conv has a
// bias (BatchNormalization folded, as in the int8 model after dequantization); opset 13,
// deterministic weights. graph.TailCutPoints gives ["block1", "stem"].
//
// Run from the pipeline directory: go run ./testdata/gentail
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
	out := "testdata/tiny_blocks.onnx"
	if len(os.Args) > 1 {
		out = os.Args[1]
	}
	var nodes []*onnx.NodeProto
	var inits []*onnx.TensorProto
	seed := 0.0
	// conv and relu6 append a node and return its output: out, or "<name>.out" when out is "".
	conv := func(name, in, out string, cin, cout, k, stride, group int) string {
		if out == "" {
			out = name + ".out"
		}
		seed += 0.7
		pad := int64(k / 2)
		fan := float64(cin / group * k * k)
		inits = append(inits,
			onnxpb.FloatTensor(name+".w", []int64{int64(cout), int64(cin / group), int64(k), int64(k)},
				values(cout*cin/group*k*k, seed, float32(1.7/math.Sqrt(fan)), 0)),
			onnxpb.FloatTensor(name+".b", []int64{int64(cout)}, values(cout, seed+0.3, 0.2, 0.1)))
		nodes = append(nodes, onnxpb.Node("Conv", name, []string{in, name + ".w", name + ".b"}, []string{out},
			onnxpb.AttrInts("kernel_shape", int64(k), int64(k)), onnxpb.AttrInts("pads", pad, pad, pad, pad),
			onnxpb.AttrInts("strides", int64(stride), int64(stride)), onnxpb.AttrInt("group", int64(group))))
		return out
	}
	relu6 := func(name, in, out string) string {
		if out == "" {
			out = name + ".out"
		}
		nodes = append(nodes, onnxpb.Node("Clip", name, []string{in, "clip.min", "clip.max"}, []string{out}))
		return out
	}
	inits = append(inits, onnxpb.FloatTensor("clip.min", nil, []float32{0}), onnxpb.FloatTensor("clip.max", nil, []float32{6}))

	stem := relu6("stem.clip", conv("stem.conv", "pixels", "", 3, 8, 3, 2, 1), "stem")
	x := relu6("b1.expand.clip", conv("b1.expand", stem, "", 8, 16, 1, 1, 1), "")
	x = relu6("b1.dw.clip", conv("b1.dw", x, "", 16, 16, 3, 1, 16), "")
	x = conv("b1.project", x, "", 16, 8, 1, 1, 1)
	nodes = append(nodes, onnxpb.Node("Add", "b1.add", []string{stem, x}, []string{"block1"}))
	x = relu6("b2.expand.clip", conv("b2.expand", "block1", "", 8, 16, 1, 1, 1), "")
	x = relu6("b2.dw.clip", conv("b2.dw", x, "", 16, 16, 3, 1, 16), "")
	x = conv("b2.project", x, "block2", 16, 12, 1, 1, 1)
	x = relu6("last.clip", conv("last.conv", x, "", 12, 20, 1, 1, 1), "")
	nodes = append(nodes,
		onnxpb.Node("GlobalAveragePool", "pool", []string{x}, []string{"pooled"}),
		onnxpb.Node("Flatten", "flatten", []string{"pooled"}, []string{"flat"}, onnxpb.AttrInt("axis", 1)),
		onnxpb.Node("Gemm", "fc", []string{"flat", "fc.w", "fc.b"}, []string{"logits"}, onnxpb.AttrInt("transB", 1)))
	inits = append(inits, onnxpb.FloatTensor("fc.w", []int64{5, 20}, values(100, 9.1, 0.3, 0)),
		onnxpb.FloatTensor("fc.b", []int64{5}, values(5, 3.3, 0.1, 0)))
	g := &onnx.GraphProto{
		Name:        "tiny_blocks",
		Node:        nodes,
		Initializer: inits,
		Input:       []*onnx.ValueInfoProto{onnxpb.ValueInfo("pixels", onnxpb.Float, "batch", 3, 8, 8)},
		Output:      []*onnx.ValueInfoProto{onnxpb.ValueInfo("logits", onnxpb.Float, "batch", 5)},
	}
	m := &onnx.ModelProto{IrVersion: 7, ProducerName: "pipeline/testdata/gentail",
		OpsetImport: []*onnx.OperatorSetIdProto{{Version: 13}}, Graph: g}
	if err := onnxpb.SaveAtomic(out, m); err != nil {
		fmt.Fprintln(os.Stderr, "gentail:", err)
		os.Exit(1)
	}
}
