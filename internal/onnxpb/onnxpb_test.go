package onnxpb

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"
)

func TestFloats(t *testing.T) {
	raw := func(vals ...float32) []byte {
		b := make([]byte, 4*len(vals))
		for i, v := range vals {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		return b
	}
	i64raw := make([]byte, 16)
	neg := int64(-3)
	binary.LittleEndian.PutUint64(i64raw, uint64(neg))
	binary.LittleEndian.PutUint64(i64raw[8:], 7)
	cases := []struct {
		name string
		t    *onnx.TensorProto
		want []float32
	}{
		{"float_data", &onnx.TensorProto{DataType: Float, Dims: []int64{2}, FloatData: []float32{1.5, -2}}, []float32{1.5, -2}},
		{"float raw", &onnx.TensorProto{DataType: Float, Dims: []int64{3}, RawData: raw(0.25, 3, -1)}, []float32{0.25, 3, -1}},
		{"scalar", &onnx.TensorProto{DataType: Float, RawData: raw(0.019)}, []float32{0.019}},
		{"uint8 raw", &onnx.TensorProto{DataType: Uint8, Dims: []int64{3}, RawData: []byte{0, 128, 255}}, []float32{0, 128, 255}},
		{"int8 raw", &onnx.TensorProto{DataType: Int8, Dims: []int64{3}, RawData: []byte{0x80, 0xff, 5}}, []float32{-128, -1, 5}},
		{"uint8 int32_data", &onnx.TensorProto{DataType: Uint8, Dims: []int64{2}, Int32Data: []int32{7, 200}}, []float32{7, 200}},
		{"int32", &onnx.TensorProto{DataType: Int32, Dims: []int64{2}, Int32Data: []int32{-5, 9}}, []float32{-5, 9}},
		{"int64 raw", &onnx.TensorProto{DataType: Int64, Dims: []int64{2}, RawData: i64raw}, []float32{-3, 7}},
		{"double", &onnx.TensorProto{DataType: Double, Dims: []int64{1}, DoubleData: []float64{0.5}}, []float32{0.5}},
	}
	for _, tc := range cases {
		got, err := Floats(tc.t)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: Floats = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	bad := []*onnx.TensorProto{
		{Name: "short", DataType: Float, Dims: []int64{3}, RawData: raw(1, 2)},
		{Name: "count", DataType: Float, Dims: []int64{3}, FloatData: []float32{1}},
		{Name: "str", DataType: int32(onnx.TensorProto_STRING), Dims: []int64{1}},
		{Name: "ext", DataType: Float, Dims: []int64{1}, DataLocation: onnx.TensorProto_EXTERNAL},
	}
	for _, tp := range bad {
		if _, err := Floats(tp); err == nil || !strings.Contains(err.Error(), `"`+tp.Name+`"`) {
			t.Errorf("Floats(%s) error = %v, want one naming the tensor", tp.Name, err)
		}
	}
}

func TestInt64s(t *testing.T) {
	got, err := Int64s(Int64Tensor("shape", []int64{2}, []int64{1, -1}))
	if err != nil || !reflect.DeepEqual(got, []int64{1, -1}) {
		t.Errorf("Int64s = %v, %v", got, err)
	}
	if _, err := Int64s(FloatTensor("f", []int64{1}, []float32{1})); err == nil {
		t.Error("Int64s accepted a float tensor")
	}
}

func TestBuilders(t *testing.T) {
	vi := ValueInfo("images", Float, "batch", 3, int64(224), 224)
	dims, params, ok := Shape(vi)
	if !ok || !reflect.DeepEqual(dims, []int64{-1, 3, 224, 224}) || !reflect.DeepEqual(params, []string{"batch", "", "", ""}) {
		t.Errorf("Shape = %v %v %v", dims, params, ok)
	}
	if ElemType(vi) != Float || DTypeName(ElemType(vi)) != "float32" || DTypeName(99) != "type(99)" {
		t.Error("ElemType/DTypeName")
	}
	n := Node("Gemm", "fc", []string{"x", "w"}, []string{"y"}, AttrInt("transB", 1), AttrFloat("alpha", 0.5), AttrInts("perm", 1, 0))
	if AttrIntOr(n, "transB", 0) != 1 || AttrIntOr(n, "transA", 7) != 7 || Attr(n, "alpha").GetF() != 0.5 ||
		!reflect.DeepEqual(Attr(n, "perm").GetInts(), []int64{1, 0}) || Attr(n, "perm").GetType() != onnx.AttributeProto_INTS {
		t.Errorf("attributes: %v", n.Attribute)
	}
	defer func() {
		if recover() == nil {
			t.Error("FloatTensor with a wrong length did not panic")
		}
	}()
	FloatTensor("bad", []int64{2, 2}, []float32{1})
}

func tinyModel() *onnx.ModelProto {
	return &onnx.ModelProto{
		IrVersion:   7,
		OpsetImport: []*onnx.OperatorSetIdProto{{Version: 12}},
		Graph: &onnx.GraphProto{
			Name:        "g",
			Node:        []*onnx.NodeProto{Node("Relu", "r", []string{"x"}, []string{"y"}), Node("Neg", "n", []string{"y"}, []string{"z"})},
			Input:       []*onnx.ValueInfoProto{ValueInfo("x", Float, "batch", 2), ValueInfo("w", Float, 2)},
			Output:      []*onnx.ValueInfoProto{ValueInfo("z", Float, "batch", 2)},
			Initializer: []*onnx.TensorProto{FloatTensor("w", []int64{2}, []float32{1, 2})},
			ValueInfo:   []*onnx.ValueInfoProto{ValueInfo("y", Float, 1, 2)},
		},
	}
}

func TestRenameAndIndexes(t *testing.T) {
	m := tinyModel()
	g := m.Graph
	if ins := RealInputs(g); len(ins) != 1 || ins[0].Name != "x" {
		t.Errorf("RealInputs = %v", ins)
	}
	Rename(g, "y", "mid")
	Rename(g, "x", "images")
	if g.Node[0].Input[0] != "images" || g.Node[0].Output[0] != "mid" || g.Node[1].Input[0] != "mid" ||
		g.Input[0].Name != "images" || g.ValueInfo[0].Name != "mid" {
		t.Errorf("Rename left %v", g)
	}
	if Producers(g)["mid"] != g.Node[0] || len(Consumers(g)["mid"]) != 1 {
		t.Error("Producers/Consumers")
	}
	names := Names(g)
	for _, n := range []string{"images", "mid", "z", "w"} {
		if !names[n] {
			t.Errorf("Names lacks %q", n)
		}
	}
	if names["x"] || names["y"] {
		t.Error("Names still has old names")
	}
	SetMetadata(m, "k", "1")
	SetMetadata(m, "k", "2")
	if len(m.MetadataProps) != 1 || m.MetadataProps[0].Value != "2" {
		t.Errorf("SetMetadata: %v", m.MetadataProps)
	}
	if OpsetVersion(m, "") != 12 || OpsetVersion(m, "ai.onnx") != 12 || OpsetVersion(m, "com.microsoft") != 0 {
		t.Error("OpsetVersion")
	}
}

func TestSaveAtomicAndLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.onnx")
	m := tinyModel()
	if err := SaveAtomic(path, m); err != nil {
		t.Fatal(err)
	}
	if err := SaveAtomic(path, m); err != nil { // overwrite
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, m) {
		t.Error("Load(SaveAtomic(m)) != m")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after two saves, want 1 (no temp files left)", len(entries))
	}
	if err := SaveAtomic(filepath.Join(dir, "missing-dir", "m.onnx"), m); err == nil {
		t.Error("SaveAtomic into a missing directory succeeded")
	}
}

func TestUnmarshalInvalid(t *testing.T) {
	noGraph, _ := proto.Marshal(&onnx.ModelProto{IrVersion: 7})
	noOpset := tinyModel()
	noOpset.OpsetImport = nil
	noOpsetData, _ := proto.Marshal(noOpset)
	cases := []struct {
		data []byte
		want string
	}{
		{nil, "is empty"},
		{noGraph, "has no graph"},
		{noOpsetData, "has no opset imports"},
		{[]byte{0xff, 0xff, 0xff}, "cannot be parsed as ONNX protobuf"},
	}
	for _, tc := range cases {
		_, err := Unmarshal(tc.data, "x.onnx")
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `"x.onnx"`) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Unmarshal error = %v, want ErrInvalid saying %q", err, tc.want)
		}
	}
}

func TestUniqueName(t *testing.T) {
	used := map[string]bool{"x": true, "x_1": true, "x_3": true}
	for base, want := range map[string]string{"x": "x_2", "y": "y", "x_1": "x_1_1"} {
		if got := UniqueName(used, base); got != want {
			t.Errorf("UniqueName(%v, %q) = %q, want %q", used, base, got, want)
		}
	}
}
