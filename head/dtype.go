package head

import (
	"errors"
	"fmt"

	gg "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// DType is the floating-point type a graph computes in. The zero value is Float32.
type DType int

const (
	// Float32 computes in float32 (the training default).
	Float32 DType = iota
	// Float64 computes in float64 (tests, gradient checks).
	Float64
)

// ErrNonFinite reports a NaN or infinity in a loss or gradient; the wrapping error names the tensor.
var ErrNonFinite = errors.New("non-finite value")

// String returns "float32" or "float64".
func (d DType) String() string {
	switch d {
	case Float32:
		return "float32"
	case Float64:
		return "float64"
	}
	return fmt.Sprintf("DType(%d)", int(d))
}

// MarshalText implements encoding.TextMarshaler.
func (d DType) MarshalText() ([]byte, error) {
	if err := d.validate(); err != nil {
		return nil, err
	}
	return []byte(d.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler; it accepts "float32" and "float64".
func (d *DType) UnmarshalText(b []byte) error {
	switch string(b) {
	case "float32":
		*d = Float32
	case "float64":
		*d = Float64
	default:
		return fmt.Errorf("head: unknown dtype %q (want float32 or float64)", string(b))
	}
	return nil
}

func (d DType) validate() error {
	if d != Float32 && d != Float64 {
		return fmt.Errorf("head: unknown dtype %d", int(d))
	}
	return nil
}

func (d DType) tensor() tensor.Dtype {
	if d == Float64 {
		return tensor.Float64
	}
	return tensor.Float32
}

// newDense returns a zeroed dense tensor of the given dtype and shape.
func newDense(d DType, shape ...int) *tensor.Dense {
	size := 1
	for _, s := range shape {
		size *= s
	}
	if d == Float64 {
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(make([]float64, size)))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(make([]float32, size)))
}

// setData copies src into t's backing array, converting to t's dtype.
// It panics if the lengths differ (a programmer bug).
func setData(t tensor.Tensor, src []float64) {
	switch d := t.Data().(type) {
	case []float64:
		if len(d) != len(src) {
			panic("head: setData length mismatch")
		}
		copy(d, src)
	case []float32:
		if len(d) != len(src) {
			panic("head: setData length mismatch")
		}
		for i, v := range src {
			d[i] = float32(v)
		}
	default:
		panic(fmt.Sprintf("head: unexpected tensor data %T", d))
	}
}

// getData copies t's values into dst as float64. It panics if the lengths differ.
func getData(dst []float64, v gg.Value) {
	switch d := v.Data().(type) {
	case []float64:
		if len(d) != len(dst) {
			panic("head: getData length mismatch")
		}
		copy(dst, d)
	case []float32:
		if len(d) != len(dst) {
			panic("head: getData length mismatch")
		}
		for i, x := range d {
			dst[i] = float64(x)
		}
	case float64:
		dst[0] = d
	case float32:
		dst[0] = float64(d)
	default:
		panic(fmt.Sprintf("head: unexpected tensor data %T", d))
	}
}

// setDataT copies the transpose of src (rows, cols) row-major into t, a (cols, rows) tensor.
func setDataT(t tensor.Tensor, src []float64, rows, cols int) {
	switch d := t.Data().(type) {
	case []float64:
		_ = d[rows*cols-1]
		for i := 0; i < rows; i++ {
			for j, v := range src[i*cols : (i+1)*cols] {
				d[j*rows+i] = v
			}
		}
	case []float32:
		_ = d[rows*cols-1]
		for i := 0; i < rows; i++ {
			for j, v := range src[i*cols : (i+1)*cols] {
				d[j*rows+i] = float32(v)
			}
		}
	default:
		panic(fmt.Sprintf("head: unexpected tensor data %T", d))
	}
}

// getDataT copies the transpose of v, a (rows, cols) tensor, into dst (cols, rows) row-major.
func getDataT(dst []float64, v gg.Value, rows, cols int) {
	switch d := v.Data().(type) {
	case []float64:
		_ = dst[rows*cols-1]
		for i := 0; i < rows; i++ {
			for j, x := range d[i*cols : (i+1)*cols] {
				dst[j*rows+i] = x
			}
		}
	case []float32:
		_ = dst[rows*cols-1]
		for i := 0; i < rows; i++ {
			for j, x := range d[i*cols : (i+1)*cols] {
				dst[j*rows+i] = float64(x)
			}
		}
	default:
		panic(fmt.Sprintf("head: unexpected tensor data %T", d))
	}
}
