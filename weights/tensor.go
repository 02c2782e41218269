package weights

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

// numElements returns the product of dims (1 for a scalar), or an error for a negative or
// overflowing dimension.
func numElements(dims []int64) (int, error) {
	n := int64(1)
	for _, d := range dims {
		if d < 0 || (d > 0 && n > math.MaxInt32/d) {
			return 0, fmt.Errorf("bad dimensions %v", dims)
		}
		n *= d
	}
	return int(n), nil
}

// tensorInts returns the elements of an integer tensor (INT8, UINT8, INT16, UINT16, INT32) as
// int32, read from raw_data (little-endian) or int32_data.
func tensorInts(t *onnx.TensorProto) ([]int32, error) {
	if t.DataLocation == onnx.TensorProto_EXTERNAL {
		return nil, fmt.Errorf("tensor %q: external data is not supported", t.Name)
	}
	n, err := numElements(t.Dims)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	dt := onnx.TensorProto_DataType(t.DataType)
	var size int
	switch dt {
	case onnx.TensorProto_INT8, onnx.TensorProto_UINT8:
		size = 1
	case onnx.TensorProto_INT16, onnx.TensorProto_UINT16:
		size = 2
	case onnx.TensorProto_INT32:
		size = 4
	default:
		return nil, fmt.Errorf("tensor %q: element type %v is not an 8/16/32-bit integer", t.Name, dt)
	}
	out := make([]int32, n)
	if t.RawData == nil {
		if len(t.Int32Data) != n {
			return nil, fmt.Errorf("tensor %q: %d values for %d elements", t.Name, len(t.Int32Data), n)
		}
		copy(out, t.Int32Data)
		return out, nil
	}
	if len(t.RawData) != n*size {
		return nil, fmt.Errorf("tensor %q: %d raw bytes for %d elements of %v", t.Name, len(t.RawData), n, dt)
	}
	raw := t.RawData
	for i := range out {
		switch dt {
		case onnx.TensorProto_INT8:
			out[i] = int32(int8(raw[i]))
		case onnx.TensorProto_UINT8:
			out[i] = int32(raw[i])
		case onnx.TensorProto_INT16:
			out[i] = int32(int16(binary.LittleEndian.Uint16(raw[2*i:])))
		case onnx.TensorProto_UINT16:
			out[i] = int32(binary.LittleEndian.Uint16(raw[2*i:]))
		case onnx.TensorProto_INT32:
			out[i] = int32(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	}
	return out, nil
}

// tensorFloats returns the elements of a FLOAT tensor, read from raw_data (little-endian) or
// float_data.
func tensorFloats(t *onnx.TensorProto) ([]float32, error) {
	if t.DataLocation == onnx.TensorProto_EXTERNAL {
		return nil, fmt.Errorf("tensor %q: external data is not supported", t.Name)
	}
	if dt := onnx.TensorProto_DataType(t.DataType); dt != onnx.TensorProto_FLOAT {
		return nil, fmt.Errorf("tensor %q: element type %v, want FLOAT", t.Name, dt)
	}
	n, err := numElements(t.Dims)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	out := make([]float32, n)
	if t.RawData == nil {
		if len(t.FloatData) != n {
			return nil, fmt.Errorf("tensor %q: %d values for %d elements", t.Name, len(t.FloatData), n)
		}
		copy(out, t.FloatData)
		return out, nil
	}
	if len(t.RawData) != 4*n {
		return nil, fmt.Errorf("tensor %q: %d raw bytes for %d float32 elements", t.Name, len(t.RawData), n)
	}
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.RawData[4*i:]))
	}
	return out, nil
}

// floatTensor returns a FLOAT tensor named name with the given dims holding data as raw_data.
func floatTensor(name string, dims []int64, data []float32) *onnx.TensorProto {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return &onnx.TensorProto{
		Name:     name,
		Dims:     append([]int64(nil), dims...),
		DataType: int32(onnx.TensorProto_FLOAT),
		RawData:  raw,
	}
}

// quantRange returns the smallest and largest value of a quantized element type.
func quantRange(dt onnx.TensorProto_DataType) (lo, hi int32, err error) {
	switch dt {
	case onnx.TensorProto_UINT8:
		return 0, math.MaxUint8, nil
	case onnx.TensorProto_INT8:
		return math.MinInt8, math.MaxInt8, nil
	case onnx.TensorProto_UINT16:
		return 0, math.MaxUint16, nil
	case onnx.TensorProto_INT16:
		return math.MinInt16, math.MaxInt16, nil
	}
	return 0, 0, fmt.Errorf("element type %v is not a quantized type", dt)
}

// dequantize writes dst[i] = (q[i] - zero[c]) * scale[c] in float32, the arithmetic of ONNX
// DequantizeLinear, where c is the index of element i along axis of a tensor of shape dims when
// scale has more than one element (per-axis quantization) and 0 otherwise. zero has the length of
// scale. It panics if the lengths disagree with dims (a bug in the caller, which validates them).
func dequantize(dst []float32, q []int32, scale []float32, zero []int32, dims []int64, axis int) {
	if len(dst) != len(q) || len(zero) != len(scale) {
		panic("weights: dequantize: mismatched lengths")
	}
	if len(scale) == 1 {
		s, z := scale[0], zero[0]
		for i, v := range q {
			dst[i] = float32(v-z) * s
		}
		return
	}
	if axis < 0 || axis >= len(dims) || int(dims[axis]) != len(scale) {
		panic("weights: dequantize: scale does not match the axis")
	}
	inner := 1
	for _, d := range dims[axis+1:] {
		inner *= int(d)
	}
	for i, v := range q {
		c := (i / inner) % len(scale)
		dst[i] = float32(v-zero[c]) * scale[c]
	}
}
