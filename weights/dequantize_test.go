package weights

import (
	"errors"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/grouploss/pipeline/internal/onnxpb"
)

func TestDequantizeKernel(t *testing.T) {
	cases := []struct {
		name  string
		q     []int32
		scale []float32
		zero  []int32
		dims  []int64
		axis  int
		want  []float32
	}{
		{"per tensor", []int32{0, 128, 255}, []float32{0.5}, []int32{128}, []int64{3}, 0, []float32{-64, 0, 63.5}},
		{"per axis 0", []int32{1, 2, 3, 4, 5, 6}, []float32{1, 0.25}, []int32{0, 2}, []int64{2, 3}, 0,
			[]float32{1, 2, 3, 0.5, 0.75, 1}},
		{"per axis 1 (columns)", []int32{1, 2, 3, 4, 5, 6}, []float32{1, 2, 4}, []int32{1, 0, -1}, []int64{2, 3}, 1,
			[]float32{0, 4, 16, 3, 10, 28}},
		{"per axis 1 of NCHW", []int32{-128, 127, 0, 0}, []float32{2, 3}, []int32{0, 0}, []int64{1, 2, 2, 1}, 1,
			[]float32{-256, 254, 0, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := make([]float32, len(c.q))
			dequantize(got, c.q, c.scale, c.zero, c.dims, c.axis)
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("got %v, want %v", got, c.want)
				}
			}
		})
	}
}

// TestDequantizeModelStructure checks the conversion of the shared int8 MobileNetV2 without
// running it: op counts, no quantized op or integer weight left, names kept, the input intact.
func TestDequantizeModelStructure(t *testing.T) {
	m := loadShared(t)
	before := proto.Clone(m)
	fm, rep, err := DequantizeModel(m)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(m, before) {
		t.Fatal("DequantizeModel modified its input")
	}
	t.Logf("report: %v", rep)
	wantConv := map[string]int{"QuantizeLinear": 1, "QLinearConv": 52, "QLinearAdd": 11,
		"QLinearGlobalAveragePool": 1, "QLinearMatMul": 1, "DequantizeLinear": 2}
	for k, v := range wantConv {
		if rep.Converted[k] != v {
			t.Errorf("converted %s: %d, want %d", k, rep.Converted[k], v)
		}
	}
	if len(rep.Converted) != len(wantConv) || rep.PassThrough["Reshape"] != 1 || len(rep.PassThrough) != 1 {
		t.Errorf("converted %v, passed through %v", rep.Converted, rep.PassThrough)
	}
	// 52 conv weights + 52 biases + classifier weight + classifier bias (a QLinearAdd constant).
	if rep.WeightTensors != 106 {
		t.Errorf("%d weight tensors dequantized, want 106", rep.WeightTensors)
	}
	if rep.Clips != 1+52+11+1+1 {
		t.Errorf("%d clips, want 66", rep.Clips)
	}
	ops := map[string]int{}
	for _, n := range fm.Graph.Node {
		ops[n.OpType]++
		if isQuantizedOp(n) || n.OpType == "DequantizeLinear" || n.Domain != "" {
			t.Errorf("node %q: op %q (domain %q) left", n.Name, n.OpType, n.Domain)
		}
	}
	if ops["Conv"] != 52 || ops["Clip"] != 66 || ops["Add"] != 11 || ops["MatMul"] != 1 ||
		ops["GlobalAveragePool"] != 1 || ops["Identity"] != 2 {
		t.Errorf("ops %v", ops)
	}
	used := map[string]bool{}
	for _, n := range fm.Graph.Node {
		for _, in := range n.Input {
			used[in] = true
		}
	}
	for _, it := range fm.Graph.Initializer {
		if !used[it.Name] {
			t.Errorf("initializer %q unused", it.Name)
		}
		switch onnx.TensorProto_DataType(it.DataType) {
		case onnx.TensorProto_FLOAT, onnx.TensorProto_INT64:
		default:
			t.Errorf("initializer %q has element type %s", it.Name, onnxpb.DTypeName(it.DataType))
		}
	}
	// The pooled features keep their name and are produced by a Clip of a GlobalAveragePool.
	prod := onnxpb.Producers(fm.Graph)
	if p := prod["464_quantized"]; p == nil || p.OpType != "Clip" || prod[p.Input[0]].OpType != "GlobalAveragePool" {
		t.Errorf("464_quantized produced by %v", p)
	}
	found := false
	for _, n := range rep.FloatTensors {
		found = found || n == "464_quantized"
	}
	if !found {
		t.Error("464_quantized not in Report.FloatTensors")
	}
	for _, vi := range fm.Graph.ValueInfo {
		if strings.HasSuffix(vi.Name, "_quantized") && onnxpb.ElemType(vi) != onnxpb.Float {
			t.Errorf("value_info %q keeps element type %s", vi.Name, onnxpb.DTypeName(onnxpb.ElemType(vi)))
		}
	}
	if len(fm.Graph.Input) != 1 || fm.Graph.Input[0].Name != "input" || len(fm.Graph.Output) != 1 ||
		fm.Graph.Output[0].Name != "output" || onnxpb.ElemType(fm.Graph.Output[0]) != onnxpb.Float {
		t.Errorf("graph inputs %v outputs %v", fm.Graph.Input, fm.Graph.Output)
	}
	if !proto.Equal(&onnx.ModelProto{OpsetImport: fm.OpsetImport}, &onnx.ModelProto{OpsetImport: m.OpsetImport}) {
		t.Errorf("opset imports changed: %v", fm.OpsetImport)
	}
}

// qdqOne builds input x -> QuantizeLinear -> node -> (outputs of node), with node given.
func qdqOne(node *onnx.NodeProto, extra ...*onnx.TensorProto) *onnx.ModelProto {
	inits := append([]*onnx.TensorProto{scalarF("s", 0.1), scalarQ("z", onnx.TensorProto_UINT8, 128)}, extra...)
	return model(
		[]*onnx.NodeProto{onnxpb.Node("QuantizeLinear", "quant", []string{"x", "s", "z"}, []string{"xq"}), node},
		inits,
		[]*onnx.ValueInfoProto{onnxpb.ValueInfo("x", onnxpb.Float, 1, 4)},
		[]*onnx.ValueInfoProto{onnxpb.ValueInfo(node.Output[0], onnxpb.Float, 1, 4)})
}

func TestDequantizeModelErrors(t *testing.T) {
	foo := onnxpb.Node("QLinearFoo", "foo_7", []string{"xq", "s", "z", "s", "z"}, []string{"y"})
	foo.Domain = "com.microsoft"
	relu := onnxpb.Node("Relu", "relu_3", []string{"xq"}, []string{"y"})
	dq := onnxpb.Node("DequantizeLinear", "dq_2", []string{"xq", "s2", "z"}, []string{"y"})
	cases := []struct {
		name     string
		m        *onnx.ModelProto
		node, op string
		msg      string
	}{
		{"unknown quantized op", qdqOne(foo), "foo_7", "QLinearFoo", "no float conversion"},
		{"float op reading a quantized tensor", qdqOne(relu), "relu_3", "Relu", `quantized tensor "xq"`},
		{"quantization mismatch", qdqOne(dq, scalarF("s2", 0.2)), "dq_2", "DequantizeLinear", "read with scale 0.2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := DequantizeModel(c.m)
			var ne *NodeError
			if !errors.As(err, &ne) || !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v: want a *NodeError wrapping ErrUnsupported", err)
			}
			if ne.Node != c.node || ne.Op != c.op || ne.Index != 1 {
				t.Errorf("error names node %q op %q index %d", ne.Node, ne.Op, ne.Index)
			}
			for _, s := range []string{"weights: ", `"` + c.node + `"`, `"` + c.op + `"`, c.msg} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}
