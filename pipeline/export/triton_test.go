package export_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/internal/testmodel"
	"github.com/grouploss/pipeline/pipeline/export"
	"github.com/grouploss/pipeline/pipeline/infer"
)

// modelConfigType is the part of Triton's ModelConfig (common/protobuf/model_config.proto,
// package inference) that config.pbtxt uses, with the proto's field numbers and types, so that
// prototext parses the file as Triton does and rejects unknown fields, wrong types and enum names.
func modelConfigType(t *testing.T) protoreflect.MessageType {
	t.Helper()
	f := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, rep bool, typeName string) *descriptorpb.FieldDescriptorProto {
		label := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
		if rep {
			label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
		}
		fd := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), Label: label.Enum()}
		if typeName != "" {
			fd.TypeName = proto.String(".inference." + typeName)
		}
		return fd
	}
	const (
		str    = descriptorpb.FieldDescriptorProto_TYPE_STRING
		i32    = descriptorpb.FieldDescriptorProto_TYPE_INT32
		i64    = descriptorpb.FieldDescriptorProto_TYPE_INT64
		u64    = descriptorpb.FieldDescriptorProto_TYPE_UINT64
		boolT  = descriptorpb.FieldDescriptorProto_TYPE_BOOL
		enumT  = descriptorpb.FieldDescriptorProto_TYPE_ENUM
		msgT   = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
		inputs = "ModelInput"
	)
	var values []*descriptorpb.EnumValueDescriptorProto
	for i, n := range []string{"TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8",
		"TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING", "TYPE_BF16"} {
		values = append(values, &descriptorpb.EnumValueDescriptorProto{Name: proto.String(n), Number: proto.Int32(int32(i))})
	}
	fdp := &descriptorpb.FileDescriptorProto{
		Name: proto.String("model_config_subset.proto"), Package: proto.String("inference"), Syntax: proto.String("proto3"),
		EnumType: []*descriptorpb.EnumDescriptorProto{{Name: proto.String("DataType"), Value: values}},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String(inputs), Field: []*descriptorpb.FieldDescriptorProto{
				f("name", 1, str, false, ""), f("data_type", 2, enumT, false, "DataType"), f("dims", 4, i64, true, "")}},
			{Name: proto.String("ModelOutput"), Field: []*descriptorpb.FieldDescriptorProto{
				f("name", 1, str, false, ""), f("data_type", 2, enumT, false, "DataType"), f("dims", 3, i64, true, "")}},
			{Name: proto.String("ModelDynamicBatching"), Field: []*descriptorpb.FieldDescriptorProto{
				f("preferred_batch_size", 1, i32, true, ""), f("max_queue_delay_microseconds", 2, u64, false, ""),
				f("preserve_ordering", 3, boolT, false, "")}},
			{Name: proto.String("ModelConfig"), Field: []*descriptorpb.FieldDescriptorProto{
				f("name", 1, str, false, ""), f("platform", 2, str, false, ""), f("backend", 17, str, false, ""),
				f("max_batch_size", 4, i32, false, ""), f("input", 5, msgT, true, inputs), f("output", 6, msgT, true, "ModelOutput"),
				f("dynamic_batching", 11, msgT, false, "ModelDynamicBatching")}},
		},
	}
	fd, err := protodesc.NewFile(fdp, nil)
	if err != nil {
		t.Fatal(err)
	}
	return dynamicpb.NewMessageType(fd.Messages().ByName("ModelConfig"))
}

// parsedTensor is an input or output read back from config.pbtxt.
type parsedTensor struct {
	name, dataType string
	dims           []int64
}

// parseConfig parses config.pbtxt as a Triton ModelConfig.
func parseConfig(t *testing.T, text []byte) (name, platform string, maxBatch int32, ins, outs []parsedTensor, delay uint64, batching bool) {
	t.Helper()
	m := modelConfigType(t).New().Interface()
	if err := prototext.Unmarshal(text, m); err != nil {
		t.Fatalf("config.pbtxt is not a Triton ModelConfig: %v\n%s", err, text)
	}
	r := m.ProtoReflect()
	get := func(msg protoreflect.Message, f string) protoreflect.Value {
		return msg.Get(msg.Descriptor().Fields().ByName(protoreflect.Name(f)))
	}
	tensors := func(field string) []parsedTensor {
		var out []parsedTensor
		l := get(r, field).List()
		for i := range l.Len() {
			e := l.Get(i).Message()
			fd := e.Descriptor().Fields().ByName("data_type")
			typ := string(fd.Enum().Values().ByNumber(get(e, "data_type").Enum()).Name())
			var dims []int64
			dl := get(e, "dims").List()
			for j := range dl.Len() {
				dims = append(dims, dl.Get(j).Int())
			}
			out = append(out, parsedTensor{get(e, "name").String(), typ, dims})
		}
		return out
	}
	db := r.Descriptor().Fields().ByName("dynamic_batching")
	batching = r.Has(db)
	if batching {
		delay = get(r.Get(db).Message(), "max_queue_delay_microseconds").Uint()
	}
	return get(r, "name").String(), get(r, "platform").String(), int32(get(r, "max_batch_size").Int()), tensors("input"), tensors("output"), delay, batching
}

// realTensors are the model's real inputs or outputs as Triton sees them: element type and dims.
func realTensors(t *testing.T, path string) (ins, outs []parsedTensor) {
	t.Helper()
	m, err := onnxpb.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	g := m.GetGraph()
	for i, vs := range [][]*onnx.ValueInfoProto{onnxpb.RealInputs(g), g.GetOutput()} {
		for _, v := range vs {
			dims, _, _ := onnxpb.Shape(v)
			typ := map[int32]string{1: "TYPE_FP32"}[onnxpb.ElemType(v)]
			pt := parsedTensor{v.GetName(), typ, dims}
			if i == 0 {
				ins = append(ins, pt)
			} else {
				outs = append(outs, pt)
			}
		}
	}
	return ins, outs
}

// TestTritonRepository: the repository of an exported embedding model (dynamic batch axis) has a
// config.pbtxt that parses as Triton's ModelConfig, whose inputs and outputs are the model's real
// ones without the batch axis, and the model itself; onnxruntime runs that copy at
// max_batch_size images.
func TestTritonRepository(t *testing.T) {
	model := testmodel.Tiny(t)
	dir := filepath.Join(t.TempDir(), "repo")
	c, err := export.WriteTriton(dir, model, export.TritonOptions{Name: "emb", MaxBatch: 16})
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(dir, "emb", "config.pbtxt"))
	if err != nil {
		t.Fatal(err)
	}
	name, platform, maxBatch, ins, outs, delay, batching := parseConfig(t, text)
	if name != "emb" || platform != "onnxruntime_onnx" || maxBatch != 16 || !batching || delay != 2000 {
		t.Errorf("name %q platform %q max_batch_size %d dynamic_batching %v (delay %d µs)\n%s", name, platform, maxBatch, batching, delay, text)
	}
	realIn, realOut := realTensors(t, model)
	for k, pair := range [][2][]parsedTensor{{ins, realIn}, {outs, realOut}} {
		got, real := pair[0], pair[1]
		if len(got) != len(real) {
			t.Fatalf("%d tensors in the config, the model has %d", len(got), len(real))
		}
		for i := range got {
			if real[i].dims[0] != -1 {
				t.Fatalf("model tensor %q has a fixed batch axis %v", real[i].name, real[i].dims)
			}
			if got[i].name != real[i].name || got[i].dataType != real[i].dataType || !slices.Equal(got[i].dims, real[i].dims[1:]) {
				t.Errorf("config tensor %+v, the model's is %+v (batch axis left out)", got[i], real[i])
			}
		}
		want := [][]string{{"images", "TYPE_FP32", "[3 6 6]"}, {"embeddings", "TYPE_FP32", "[3]"}}[k]
		if got[0].name != want[0] || got[0].dataType != want[1] || fmt.Sprint(got[0].dims) != want[2] {
			t.Errorf("tensor %+v, want %v", got[0], want)
		}
	}
	if !strings.Contains(string(text), "# preprocess.size: 6x6\n") {
		t.Errorf("config.pbtxt does not record the preprocessing:\n%s", text)
	}
	src, _ := os.ReadFile(model)
	cp, err := os.ReadFile(filepath.Join(dir, "emb", "1", "model.onnx"))
	if err != nil || !bytes.Equal(src, cp) {
		t.Fatalf("1/model.onnx is not a copy of the model (%v)", err)
	}
	if c.MaxBatchSize != 16 {
		t.Errorf("returned config %+v", c)
	}
	// The copy runs in onnxruntime with a batch of max_batch_size and the declared shapes.
	e, err := infer.OpenEmbedder(filepath.Join(dir, "emb", "1", "model.onnx"), infer.WithLibraryPath(testenv.ORTLibrary(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	out, err := e.EmbedTensors(make([]float32, 16*3*6*6), 16)
	if err != nil || len(out) != 16*3 {
		t.Fatalf("running the repository's model at batch 16: %d values, %v", len(out), err)
	}
}

// TestTritonFixedBatch: a model whose batch axis is fixed (the tiny test CNN: [1,3,6,6]) gets
// max_batch_size 0, the full shapes and no dynamic batching, as Triton requires.
func TestTritonFixedBatch(t *testing.T) {
	dir := t.TempDir()
	if _, err := export.WriteTriton(dir, testmodel.TinyCNN(), export.TritonOptions{}); err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(dir, "tiny_cnn", "config.pbtxt"))
	if err != nil {
		t.Fatal(err)
	}
	name, _, maxBatch, ins, outs, _, batching := parseConfig(t, text)
	realIn, realOut := realTensors(t, testmodel.TinyCNN())
	if name != "tiny_cnn" || maxBatch != 0 || batching || len(ins) != 1 || len(outs) != 1 ||
		!slices.Equal(ins[0].dims, realIn[0].dims) || !slices.Equal(outs[0].dims, realOut[0].dims) || ins[0].name != realIn[0].name {
		t.Errorf("fixed batch: name %q max_batch_size %d batching %v inputs %+v outputs %+v; model %+v %+v\n%s",
			name, maxBatch, batching, ins, outs, realIn, realOut, text)
	}
}

// TestTritonErrors: a bad name, an unsupported element type or a model that is not ONNX are
// errors naming the problem, and nothing is written.
func TestTritonErrors(t *testing.T) {
	dir := t.TempDir()
	model := testmodel.Tiny(t)
	if _, err := export.WriteTriton(dir, model, export.TritonOptions{Name: "../x"}); err == nil || !strings.Contains(err.Error(), `model name "../x"`) {
		t.Errorf("bad name: %v", err)
	}
	junk := filepath.Join(t.TempDir(), "junk.onnx")
	os.WriteFile(junk, []byte("not a model"), 0o644)
	if _, err := export.WriteTriton(dir, junk, export.TritonOptions{}); err == nil || !strings.Contains(err.Error(), "junk.onnx") {
		t.Errorf("junk model: %v", err)
	}
	m, err := onnxpb.Load(model)
	if err != nil {
		t.Fatal(err)
	}
	m.GetGraph().GetOutput()[0].GetType().GetTensorType().ElemType = 14 // COMPLEX128
	raw, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := export.TritonModelConfig(raw, "c.onnx", export.TritonOptions{}); err == nil || !strings.Contains(err.Error(), `tensor "embeddings" has ONNX element type 14`) {
		t.Errorf("complex output: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("the failed exports wrote %v", ents)
	}
}
