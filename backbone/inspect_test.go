package backbone

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestInspectInt8MobileNetV2(t *testing.T) {
	path := int8Model(t)
	info, err := Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Inputs) != 1 || info.Inputs[0].Name != "input" || info.Inputs[0].DType != "float32" ||
		!reflect.DeepEqual(info.Inputs[0].Shape, []int64{-1, 3, 224, 224}) {
		t.Errorf("inputs = %+v, want input float32 [-1,3,224,224]", info.Inputs)
	}
	if len(info.Outputs) != 1 || info.Outputs[0].Name != "output" || !reflect.DeepEqual(info.Outputs[0].Shape, []int64{-1, 1000}) {
		t.Errorf("outputs = %+v, want output [-1,1000]", info.Outputs)
	}
	if got := info.Inputs[0].ShapeString(); got != "[batch_size,3,224,224]" {
		t.Errorf("input shape string = %q", got)
	}
	if info.Opsets[""] != 12 || !info.Quantized || info.Nodes != 73 || info.Ops["QLinearConv"] != 52 {
		t.Errorf("opsets %v, quantized %v, nodes %d, QLinearConv %d; want 12, true, 73, 52",
			info.Opsets, info.Quantized, info.Nodes, info.Ops["QLinearConv"])
	}
	// The hash must agree with the published checksum.
	if want := publishedSHA256(t, path); info.SHA256 != want {
		t.Errorf("SHA256 = %s, want %s (models/SHA256SUMS)", info.SHA256, want)
	}
	if info.Auto != "464_quantized" {
		t.Fatalf("Auto = %q, want 464_quantized; candidates %+v", info.Auto, info.Features)
	}
	byName := map[string]Candidate{}
	for _, c := range info.Features {
		byName[c.Tensor] = c
	}
	pooled := byName["464_quantized"]
	want := Candidate{Tensor: "464_quantized", Op: "QLinearGlobalAveragePool", Node: "GlobalAveragePool_97_quant",
		Role: RolePooled, Shape: []int64{-1, 1280, 1, 1}, Dim: 1280, Quantized: true,
		Scale: "464_scale", ZeroPoint: "464_zero_point", Auto: true}
	if !reflect.DeepEqual(pooled, want) {
		t.Errorf("pooled candidate = %+v\nwant %+v", pooled, want)
	}
	flat := byName["472_quantized"]
	if flat.Role != RoleFlattened || !flat.ClassifierInput || !flat.Quantized || flat.Scale != "464_scale" || flat.Auto {
		t.Errorf("reshaped classifier input candidate = %+v", flat)
	}
}

func publishedSHA256(t *testing.T, model string) string {
	f, err := os.Open(filepath.Join(filepath.Dir(model), "SHA256SUMS"))
	if err != nil {
		t.Skipf("no SHA256SUMS beside the model: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 2 && strings.TrimPrefix(fields[1], "*") == filepath.Base(model) {
			return fields[0]
		}
	}
	t.Fatalf("SHA256SUMS lists no %s", filepath.Base(model))
	return ""
}

func TestInspectTiny(t *testing.T) {
	info, err := Inspect(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	if info.Auto != "pooled" || info.Quantized || info.Metadata["purpose"] != "backbone tests" {
		t.Errorf("auto %q, quantized %v, metadata %v", info.Auto, info.Quantized, info.Metadata)
	}
	want := []Candidate{
		{Tensor: "pooled", Op: "GlobalAveragePool", Node: "pool", Role: RolePooled, Shape: []int64{1, 4, 1, 1}, Dim: 4, Auto: true},
		{Tensor: "flat", Op: "Flatten", Node: "flatten", Role: RoleFlattened, Shape: []int64{1, 4}, Dim: 4, ClassifierInput: true},
	}
	if !reflect.DeepEqual(info.Features, want) {
		t.Errorf("features = %+v\nwant %+v", info.Features, want)
	}
}

func ExampleInspect() {
	info, err := Inspect("testdata/tiny_cnn.onnx")
	if err != nil {
		panic(err)
	}
	for _, in := range info.Inputs {
		fmt.Println("input", in.Name, in.DType, in.ShapeString())
	}
	for _, c := range info.Features {
		fmt.Println("candidate", c.Tensor, c.Op, c.Role, c.Dim, c.Auto)
	}
	// Output:
	// input pixels float32 [1,3,6,6]
	// candidate pooled GlobalAveragePool pooled 4 true
	// candidate flat Flatten flattened 4 false
}
