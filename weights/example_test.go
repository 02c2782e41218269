package weights_test

import (
	"fmt"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/weights"
)

// A quantized linear layer: x -> QuantizeLinear -> QLinearMatMul (int8 weights, per-column
// scales) -> DequantizeLinear -> y becomes Clip -> MatMul (float weights) -> Clip -> Identity.
func ExampleDequantizeModel() {
	f := func(name string, dims []int64, v ...float32) *onnx.TensorProto {
		return onnxpb.FloatTensor(name, dims, v)
	}
	q := func(name string, dt onnx.TensorProto_DataType, dims []int64, v ...byte) *onnx.TensorProto {
		return &onnx.TensorProto{Name: name, DataType: int32(dt), Dims: dims, RawData: v}
	}
	m := &onnx.ModelProto{
		IrVersion:   7,
		OpsetImport: []*onnx.OperatorSetIdProto{{Version: 12}},
		Graph: &onnx.GraphProto{
			Node: []*onnx.NodeProto{
				onnxpb.Node("QuantizeLinear", "q", []string{"x", "xs", "xz"}, []string{"x_quantized"}),
				onnxpb.Node("QLinearMatMul", "fc", []string{"x_quantized", "xs", "xz", "w_quantized", "ws", "wz", "ys", "yz"}, []string{"y_quantized"}),
				onnxpb.Node("DequantizeLinear", "dq", []string{"y_quantized", "ys", "yz"}, []string{"y"}),
			},
			Initializer: []*onnx.TensorProto{
				f("xs", nil, 0.5), q("xz", onnx.TensorProto_UINT8, nil, 0),
				q("w_quantized", onnx.TensorProto_INT8, []int64{2, 2}, 1, 2, 3, 0xfc), // [[1 2] [3 -4]]
				f("ws", []int64{2}, 0.5, 0.25), q("wz", onnx.TensorProto_INT8, []int64{2}, 0, 0),
				f("ys", nil, 0.1), q("yz", onnx.TensorProto_UINT8, nil, 0),
			},
			Input:  []*onnx.ValueInfoProto{onnxpb.ValueInfo("x", onnxpb.Float, 1, 2)},
			Output: []*onnx.ValueInfoProto{onnxpb.ValueInfo("y", onnxpb.Float, 1, 2)},
		},
	}
	fm, rep, err := weights.DequantizeModel(m)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rep)
	for _, n := range fm.Graph.Node {
		fmt.Println(n.OpType, n.Input, "->", n.Output)
	}
	for _, t := range fm.Graph.Initializer {
		v, _ := onnxpb.Floats(t)
		fmt.Println(t.Name, v)
	}
	// Output:
	// converted DequantizeLinear=1 QLinearMatMul=1 QuantizeLinear=1; 1 weight tensors (4 values) dequantized; 2 clips; 7 initializers dropped
	// Clip [x x_quantized_clip_min x_quantized_clip_max] -> [x_quantized]
	// MatMul [x_quantized w] -> [y_quantized_unclipped]
	// Clip [y_quantized_unclipped y_quantized_clip_min y_quantized_clip_max] -> [y_quantized]
	// Identity [y_quantized] -> [y]
	// x_quantized_clip_min [0]
	// x_quantized_clip_max [127.5]
	// w [0.5 0.5 1.5 -1]
	// y_quantized_clip_min [0]
	// y_quantized_clip_max [25.5]
}
