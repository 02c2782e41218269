package onnxpb

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

// Element types (TensorProto.DataType values) used by this project.
const (
	Float  = int32(onnx.TensorProto_FLOAT)
	Uint8  = int32(onnx.TensorProto_UINT8)
	Int8   = int32(onnx.TensorProto_INT8)
	Int32  = int32(onnx.TensorProto_INT32)
	Int64  = int32(onnx.TensorProto_INT64)
	Double = int32(onnx.TensorProto_DOUBLE)
)

// DTypeName returns a short lowercase name for an element type: "float32", "uint8", "int8",
// "int64", ...; unknown types give "type(N)".
func DTypeName(t int32) string {
	switch onnx.TensorProto_DataType(t) {
	case onnx.TensorProto_FLOAT:
		return "float32"
	case onnx.TensorProto_UINT8:
		return "uint8"
	case onnx.TensorProto_INT8:
		return "int8"
	case onnx.TensorProto_UINT16:
		return "uint16"
	case onnx.TensorProto_INT16:
		return "int16"
	case onnx.TensorProto_INT32:
		return "int32"
	case onnx.TensorProto_INT64:
		return "int64"
	case onnx.TensorProto_STRING:
		return "string"
	case onnx.TensorProto_BOOL:
		return "bool"
	case onnx.TensorProto_FLOAT16:
		return "float16"
	case onnx.TensorProto_DOUBLE:
		return "float64"
	case onnx.TensorProto_UINT32:
		return "uint32"
	case onnx.TensorProto_UINT64:
		return "uint64"
	case onnx.TensorProto_BFLOAT16:
		return "bfloat16"
	}
	return fmt.Sprintf("type(%d)", t)
}

// NumElements returns the product of the tensor's dims (1 for a scalar), or -1 when a dim is
// negative or the product exceeds MaxTensorElements (which Unmarshal refuses).
func NumElements(t *onnx.TensorProto) int {
	n, err := elements(t.GetDims())
	if err != nil {
		return -1
	}
	return int(n)
}

// Floats returns the tensor's values converted to float32, from float_data, int32_data,
// int64_data, double_data or raw_data. Supported element types: float32, float64, int8, uint8,
// int16, uint16, int32, int64, bool. Tensors with external data are refused.
func Floats(t *onnx.TensorProto) ([]float32, error) {
	if t == nil {
		return nil, fmt.Errorf("onnxpb: nil tensor")
	}
	if t.GetDataLocation() == onnx.TensorProto_EXTERNAL || len(t.GetExternalData()) > 0 {
		return nil, fmt.Errorf("onnxpb: tensor %q uses external data, which is not supported", t.GetName())
	}
	n64, err := elements(t.GetDims())
	if err != nil {
		return nil, fmt.Errorf("onnxpb: tensor %q: %w", t.GetName(), err)
	}
	n := int(n64)
	raw := t.GetRawData()
	dt := onnx.TensorProto_DataType(t.GetDataType())
	size := elemSize(dt)
	if size == 0 {
		return nil, fmt.Errorf("onnxpb: %w: tensor %q has element type %s, which cannot be read as float32",
			ErrInvalid, t.GetName(), DTypeName(t.GetDataType()))
	}
	// The declared size is checked against the data present before anything is allocated.
	if len(raw) > 0 || n == 0 {
		if len(raw) != n*size {
			return nil, fmt.Errorf("onnxpb: %w: tensor %q has %d raw bytes, want %d (%d elements of %s)",
				ErrInvalid, t.GetName(), len(raw), n*size, n, DTypeName(t.GetDataType()))
		}
		out := make([]float32, n)
		for i := range out {
			b := raw[i*size:]
			switch dt {
			case onnx.TensorProto_FLOAT:
				out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b))
			case onnx.TensorProto_DOUBLE:
				out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b)))
			case onnx.TensorProto_INT8:
				out[i] = float32(int8(b[0]))
			case onnx.TensorProto_UINT8, onnx.TensorProto_BOOL:
				out[i] = float32(b[0])
			case onnx.TensorProto_INT16:
				out[i] = float32(int16(binary.LittleEndian.Uint16(b)))
			case onnx.TensorProto_UINT16:
				out[i] = float32(binary.LittleEndian.Uint16(b))
			case onnx.TensorProto_INT32:
				out[i] = float32(int32(binary.LittleEndian.Uint32(b)))
			case onnx.TensorProto_INT64:
				out[i] = float32(int64(binary.LittleEndian.Uint64(b)))
			}
		}
		return out, nil
	}
	var got int
	switch dt {
	case onnx.TensorProto_FLOAT:
		got = len(t.GetFloatData())
	case onnx.TensorProto_DOUBLE:
		got = len(t.GetDoubleData())
	case onnx.TensorProto_INT64:
		got = len(t.GetInt64Data())
	default:
		got = len(t.GetInt32Data())
	}
	if got != n {
		return nil, fmt.Errorf("onnxpb: %w: tensor %q holds %d values, want %d for dims %v",
			ErrInvalid, t.GetName(), got, n, t.GetDims())
	}
	out := make([]float32, n)
	switch dt {
	case onnx.TensorProto_FLOAT:
		copy(out, t.GetFloatData())
	case onnx.TensorProto_DOUBLE:
		for i, v := range t.GetDoubleData() {
			if i < n {
				out[i] = float32(v)
			}
		}
	case onnx.TensorProto_INT64:
		for i, v := range t.GetInt64Data() {
			if i < n {
				out[i] = float32(v)
			}
		}
	default: // int8, uint8, int16, uint16, int32, bool live in int32_data
		for i, v := range t.GetInt32Data() {
			if i < n {
				out[i] = float32(v)
			}
		}
	}
	return out, nil
}

// Int64s returns the values of an integer tensor (int8 ... int64) as int64, e.g. a Reshape
// shape or ReduceMean axes.
func Int64s(t *onnx.TensorProto) ([]int64, error) {
	switch onnx.TensorProto_DataType(t.GetDataType()) {
	case onnx.TensorProto_INT64:
		n, err := elements(t.GetDims())
		if err != nil {
			return nil, fmt.Errorf("onnxpb: tensor %q: %w", t.GetName(), err)
		}
		if len(t.GetRawData()) == 0 {
			if int64(len(t.GetInt64Data())) != n {
				return nil, fmt.Errorf("onnxpb: %w: tensor %q holds %d values, want %d",
					ErrInvalid, t.GetName(), len(t.GetInt64Data()), n)
			}
			return append([]int64(nil), t.GetInt64Data()...), nil
		}
		raw := t.GetRawData()
		if int64(len(raw)) != 8*n {
			return nil, fmt.Errorf("onnxpb: %w: tensor %q has %d raw bytes, want %d",
				ErrInvalid, t.GetName(), len(raw), 8*n)
		}
		out := make([]int64, len(raw)/8)
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
		}
		return out, nil
	case onnx.TensorProto_INT8, onnx.TensorProto_UINT8, onnx.TensorProto_INT16,
		onnx.TensorProto_UINT16, onnx.TensorProto_INT32:
		f, err := Floats(t)
		if err != nil {
			return nil, err
		}
		out := make([]int64, len(f))
		for i, v := range f {
			out[i] = int64(v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("onnxpb: %w: tensor %q has element type %s, want an integer type",
		ErrInvalid, t.GetName(), DTypeName(t.GetDataType()))
}

func elemSize(dt onnx.TensorProto_DataType) int {
	switch dt {
	case onnx.TensorProto_FLOAT, onnx.TensorProto_INT32:
		return 4
	case onnx.TensorProto_DOUBLE, onnx.TensorProto_INT64:
		return 8
	case onnx.TensorProto_INT8, onnx.TensorProto_UINT8, onnx.TensorProto_BOOL:
		return 1
	case onnx.TensorProto_INT16, onnx.TensorProto_UINT16:
		return 2
	}
	return 0
}

// FloatTensor returns a float32 initializer with the given dims; data is copied and its
// length must equal the product of dims (it panics otherwise: a programmer bug).
func FloatTensor(name string, dims []int64, data []float32) *onnx.TensorProto {
	n := 1
	for _, d := range dims {
		n *= int(d)
	}
	if n != len(data) {
		panic(fmt.Sprintf("onnxpb: FloatTensor %q: dims %v need %d values, got %d", name, dims, n, len(data)))
	}
	return &onnx.TensorProto{
		Name:      name,
		DataType:  Float,
		Dims:      append([]int64(nil), dims...),
		FloatData: append([]float32(nil), data...),
	}
}

// Int64Tensor returns an int64 initializer (e.g. a Reshape shape); it panics when len(data)
// does not match dims.
func Int64Tensor(name string, dims []int64, data []int64) *onnx.TensorProto {
	n := 1
	for _, d := range dims {
		n *= int(d)
	}
	if n != len(data) {
		panic(fmt.Sprintf("onnxpb: Int64Tensor %q: dims %v need %d values, got %d", name, dims, n, len(data)))
	}
	return &onnx.TensorProto{
		Name:      name,
		DataType:  Int64,
		Dims:      append([]int64(nil), dims...),
		Int64Data: append([]int64(nil), data...),
	}
}

// Int8Tensor returns an int8 initializer (raw data); it panics when len(data) does not match dims.
func Int8Tensor(name string, dims []int64, data []int8) *onnx.TensorProto {
	raw := make([]byte, len(data))
	for i, v := range data {
		raw[i] = byte(v)
	}
	return rawTensor(name, Int8, dims, raw, len(data))
}

// Uint8Tensor returns a uint8 initializer (raw data); it panics when len(data) does not match dims.
func Uint8Tensor(name string, dims []int64, data []uint8) *onnx.TensorProto {
	return rawTensor(name, Uint8, dims, append([]byte(nil), data...), len(data))
}

// Int32Tensor returns an int32 initializer; it panics when len(data) does not match dims.
func Int32Tensor(name string, dims []int64, data []int32) *onnx.TensorProto {
	checkLen("Int32Tensor", name, dims, len(data))
	return &onnx.TensorProto{Name: name, DataType: Int32, Dims: append([]int64(nil), dims...), Int32Data: append([]int32(nil), data...)}
}

func rawTensor(name string, dt int32, dims []int64, raw []byte, n int) *onnx.TensorProto {
	checkLen("tensor", name, dims, n)
	return &onnx.TensorProto{Name: name, DataType: dt, Dims: append([]int64(nil), dims...), RawData: raw}
}

func checkLen(what, name string, dims []int64, got int) {
	n := 1
	for _, d := range dims {
		n *= int(d)
	}
	if n != got {
		panic(fmt.Sprintf("onnxpb: %s %q: dims %v need %d values, got %d", what, name, dims, n, got))
	}
}
