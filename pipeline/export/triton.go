package export

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/internal/atomicfile"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// TritonOptions configures WriteTriton.
type TritonOptions struct {
	Name     string        // model name (the folder in the repository); "" is the model file's name without extension
	MaxBatch int           // max_batch_size when the model's batch axis is dynamic; 0 means 32
	MaxDelay time.Duration // dynamic_batching max_queue_delay_microseconds; 0 means 2 ms
}

// tritonTypes maps ONNX element types (TensorProto.DataType) to Triton's DataType names
// (model_config.proto).
var tritonTypes = map[int32]string{
	1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
	7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
	13: "TYPE_UINT64", 16: "TYPE_BF16",
}

// TritonTensor is one input or output of a Triton model configuration.
type TritonTensor struct {
	Name     string
	DataType string  // TYPE_FP32, ...
	Dims     []int64 // without the batch axis when the model batches; -1 for a dynamic axis
}

// TritonConfig is what WriteTriton writes to config.pbtxt.
type TritonConfig struct {
	Name         string
	MaxBatchSize int // 0: the model's batch axis is fixed, Dims are the full shapes
	MaxDelay     time.Duration
	Inputs       []TritonTensor
	Outputs      []TritonTensor
	Metadata     map[string]string // the model's metadata_props, written as comments
}

// TritonModelConfig derives the Triton configuration of the ONNX model in raw (named path in
// errors) from its real inputs and outputs. When every input and output has a dynamic first axis,
// that axis is the batch: max_batch_size is o.MaxBatch, the dims leave it out (Triton adds it,
// and reports it as -1) and dynamic batching is on. Otherwise max_batch_size is 0 and the dims
// are the full shapes.
func TritonModelConfig(raw []byte, path string, o TritonOptions) (*TritonConfig, error) {
	m, err := onnxpb.Unmarshal(raw, path)
	if err != nil {
		return nil, fmt.Errorf("export: triton: %w", err)
	}
	g := m.GetGraph()
	for _, init := range g.GetInitializer() {
		if init.GetDataLocation() == onnx.TensorProto_EXTERNAL {
			return nil, fmt.Errorf("export: triton: model %q keeps initializer %q in an external file: only a self-contained model.onnx is copied", path, init.GetName())
		}
	}
	if o.Name == "" {
		o.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	if !ValidModelName(o.Name) {
		return nil, fmt.Errorf("export: triton: model name %q: want letters, digits, '.', '_' or '-' (it is a folder name)", o.Name)
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 32
	}
	if o.MaxDelay == 0 {
		o.MaxDelay = 2 * time.Millisecond
	}
	if o.MaxBatch < 1 || o.MaxDelay < 0 {
		return nil, fmt.Errorf("export: triton: max batch %d, max delay %v: want >= 1 and >= 0", o.MaxBatch, o.MaxDelay)
	}
	c := &TritonConfig{Name: o.Name, MaxBatchSize: o.MaxBatch, MaxDelay: o.MaxDelay}
	ins, outs := onnxpb.RealInputs(g), g.GetOutput()
	if len(ins) == 0 || len(outs) == 0 {
		return nil, fmt.Errorf("export: triton: model %q has %d inputs and %d outputs, want at least one of each", path, len(ins), len(outs))
	}
	if c.Inputs, err = tritonTensors(ins, path); err != nil {
		return nil, err
	}
	if c.Outputs, err = tritonTensors(outs, path); err != nil {
		return nil, err
	}
	batched := true
	for _, t := range append(append([]TritonTensor(nil), c.Inputs...), c.Outputs...) {
		batched = batched && len(t.Dims) > 0 && t.Dims[0] == -1
	}
	if batched {
		for _, ts := range [][]TritonTensor{c.Inputs, c.Outputs} {
			for i := range ts {
				ts[i].Dims = ts[i].Dims[1:]
			}
		}
	}
	if !batched {
		c.MaxBatchSize = 0
	}
	for _, p := range m.GetMetadataProps() {
		if c.Metadata == nil {
			c.Metadata = map[string]string{}
		}
		c.Metadata[p.GetKey()] = p.GetValue()
	}
	return c, nil
}

func tritonTensors(vs []*onnx.ValueInfoProto, path string) ([]TritonTensor, error) {
	ts := make([]TritonTensor, len(vs))
	for i, v := range vs {
		t, err := tritonTensor(v, path)
		if err != nil {
			return nil, err
		}
		ts[i] = t
	}
	return ts, nil
}

func tritonTensor(v *onnx.ValueInfoProto, path string) (TritonTensor, error) {
	typ, ok := tritonTypes[onnxpb.ElemType(v)]
	if !ok {
		return TritonTensor{}, fmt.Errorf("export: triton: model %q: tensor %q has ONNX element type %d, which Triton does not take",
			path, v.GetName(), onnxpb.ElemType(v))
	}
	dims, _, ok := onnxpb.Shape(v)
	if !ok {
		return TritonTensor{}, fmt.Errorf("export: triton: model %q: tensor %q has no shape", path, v.GetName())
	}
	return TritonTensor{Name: v.GetName(), DataType: typ, Dims: dims}, nil
}

// ValidModelName reports whether s can name a served model: a Triton repository folder and a URL
// path segment (/v2/models/NAME) alike, so letters, digits, '.', '_' and '-', not "." or "..".
func ValidModelName(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// PBTxt returns the configuration in protobuf text format (Triton's config.pbtxt).
func (c *TritonConfig) PBTxt() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Triton model configuration written by `pipeline export --triton`.\n")
	keys := make([]string, 0, len(c.Metadata))
	for k := range c.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "# %s: %s\n", k, strings.ReplaceAll(c.Metadata[k], "\n", " "))
	}
	fmt.Fprintf(&b, "name: %s\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: %d\n", strconv.Quote(c.Name), c.MaxBatchSize)
	tensors := func(field string, ts []TritonTensor) {
		for _, t := range ts {
			dims := make([]string, len(t.Dims))
			for i, d := range t.Dims {
				dims[i] = strconv.FormatInt(d, 10)
			}
			fmt.Fprintf(&b, "%s [\n  {\n    name: %s\n    data_type: %s\n    dims: [ %s ]\n  }\n]\n", field, strconv.Quote(t.Name), t.DataType, strings.Join(dims, ", "))
		}
	}
	tensors("input", c.Inputs)
	tensors("output", c.Outputs)
	if c.MaxBatchSize > 0 {
		fmt.Fprintf(&b, "dynamic_batching {\n  max_queue_delay_microseconds: %d\n}\n", c.MaxDelay.Microseconds())
	}
	return b.String()
}

// WriteTriton writes a Triton model repository entry for the ONNX model at modelPath:
// DIR/<name>/config.pbtxt (see TritonModelConfig) and DIR/<name>/1/model.onnx (a copy), each
// atomically. It returns the configuration written.
func WriteTriton(dir, modelPath string, o TritonOptions) (*TritonConfig, error) {
	if dir == "" {
		return nil, errors.New("export: triton: no repository folder")
	}
	raw, err := onnxpb.ReadFile(modelPath)
	if err != nil {
		return nil, fmt.Errorf("export: triton: %w", err)
	}
	c, err := TritonModelConfig(raw, modelPath, o)
	if err != nil {
		return nil, err
	}
	version := filepath.Join(dir, c.Name, "1")
	if err := os.MkdirAll(version, 0o755); err != nil {
		return nil, fmt.Errorf("export: triton: %w", err)
	}
	if err := atomicfile.WriteBytes(filepath.Join(version, "model.onnx"), "Triton model", raw); err != nil {
		return nil, fmt.Errorf("export: triton: %w", err)
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, c.Name, "config.pbtxt"), "Triton config", []byte(c.PBTxt())); err != nil {
		return nil, fmt.Errorf("export: triton: %w", err)
	}
	return c, nil
}
