package weights

import (
	"fmt"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

// params reads a scale and an optional zero point (uint8 zeros when zeroName is empty).
func (c *converter) params(scaleName, zeroName string) (scales []float32, zeros []int32, elem onnx.TensorProto_DataType, err error) {
	st, ok := c.consts[scaleName]
	if !ok {
		return nil, nil, 0, fmt.Errorf("scale %q is not a constant", scaleName)
	}
	if scales, err = tensorFloats(st); err != nil {
		return nil, nil, 0, err
	}
	if len(scales) == 0 {
		return nil, nil, 0, fmt.Errorf("scale %q is empty", scaleName)
	}
	elem = onnx.TensorProto_UINT8
	zeros = make([]int32, len(scales))
	if zeroName != "" {
		zt, ok := c.consts[zeroName]
		if !ok {
			return nil, nil, 0, fmt.Errorf("zero point %q is not a constant", zeroName)
		}
		z, err := tensorInts(zt)
		if err != nil {
			return nil, nil, 0, err
		}
		switch {
		case len(z) == len(scales):
			copy(zeros, z)
		case len(z) == 1:
			for i := range zeros {
				zeros[i] = z[0]
			}
		default:
			return nil, nil, 0, fmt.Errorf("zero point %q has %d elements, scale %q %d", zeroName, len(z), scaleName, len(scales))
		}
		elem = onnx.TensorProto_DataType(zt.DataType)
	}
	return scales, zeros, elem, nil
}

// scalarParams reads a per-tensor quantization.
func (c *converter) scalarParams(scaleName, zeroName string) (qparams, error) {
	s, z, elem, err := c.params(scaleName, zeroName)
	if err != nil {
		return qparams{}, err
	}
	if len(s) != 1 {
		return qparams{}, fmt.Errorf("scale %q has %d elements: per-axis quantization of a value computed at run time: %w", scaleName, len(s), ErrUnsupported)
	}
	return qparams{scale: s[0], zero: z[0], elem: elem}, nil
}

// operand returns the name of the float value of the quantized input name read with the given
// scale and zero point: the same name for an activation (whose quantization must match), or a
// new float32 initializer for a constant, dequantized along axis (ONNX convention, negative from
// the end) when perAxis and the scale has several elements.
func (c *converter) operand(name, scaleName, zeroName string, axis int, perAxis bool) (string, error) {
	if q, ok := c.quant[name]; ok {
		p, err := c.scalarParams(scaleName, zeroName)
		if err != nil {
			return "", err
		}
		if p.scale != q.scale || p.zero != q.zero {
			return "", fmt.Errorf("tensor %q is read with scale %g, zero point %d but was quantized with scale %g, zero point %d: %w",
				name, p.scale, p.zero, q.scale, q.zero, ErrUnsupported)
		}
		return name, nil
	}
	t, ok := c.consts[name]
	if !ok {
		return "", fmt.Errorf("input %q is neither a constant nor the output of a quantized op this converter knows (a quantized graph input?): %w", name, ErrUnsupported)
	}
	key := fmt.Sprintf("%s\x00%s\x00%s\x00%d\x00%t", name, scaleName, zeroName, axis, perAxis)
	if f, ok := c.dq[key]; ok {
		return f, nil
	}
	scales, zeros, _, err := c.params(scaleName, zeroName)
	if err != nil {
		return "", err
	}
	data, err := c.dequantizeConst(t, name, scales, zeros, axis, perAxis)
	if err != nil {
		return "", err
	}
	base := name + "_float"
	if s, ok := strings.CutSuffix(name, "_quantized"); ok && s != "" {
		base = s
	}
	f := c.fresh(base)
	c.inits = append(c.inits, floatTensor(f, t.Dims, data))
	c.dq[key] = f
	return f, nil
}

func (c *converter) dequantizeConst(t *onnx.TensorProto, name string, scales []float32, zeros []int32, axis int, perAxis bool) ([]float32, error) {
	q, err := tensorInts(t)
	if err != nil {
		return nil, err
	}
	if len(scales) > 1 {
		rank := len(t.Dims)
		if axis < 0 {
			axis += rank
		}
		if !perAxis {
			return nil, fmt.Errorf("constant %q: %d scales where one per tensor is expected: %w", name, len(scales), ErrUnsupported)
		}
		if axis < 0 || axis >= rank || int(t.Dims[axis]) != len(scales) {
			return nil, fmt.Errorf("constant %q of shape %v: %d scales do not match axis %d", name, t.Dims, len(scales), axis)
		}
	}
	data := make([]float32, len(q))
	dequantize(data, q, scales, zeros, t.Dims, axis)
	c.rep.WeightTensors++
	c.rep.WeightElements += len(data)
	return data, nil
}

// bias dequantizes the int32 bias b of a QLinearConv: b[c] * xScale * wScales[c].
func (c *converter) bias(b string, xScale float32, wScales []float32) (string, error) {
	t, ok := c.consts[b]
	if !ok {
		return "", fmt.Errorf("bias %q is not a constant: %w", b, ErrUnsupported)
	}
	if dt := onnx.TensorProto_DataType(t.DataType); dt != onnx.TensorProto_INT32 {
		return "", fmt.Errorf("bias %q has element type %v, want INT32", b, dt)
	}
	q, err := tensorInts(t)
	if err != nil {
		return "", err
	}
	if len(wScales) != 1 && len(wScales) != len(q) {
		return "", fmt.Errorf("bias %q has %d elements for %d weight scales", b, len(q), len(wScales))
	}
	data := make([]float32, len(q))
	for i, v := range q {
		ws := wScales[0]
		if len(wScales) > 1 {
			ws = wScales[i]
		}
		data[i] = float32(float64(v) * float64(xScale) * float64(ws))
	}
	base := b + "_float"
	if s, ok := strings.CutSuffix(b, "_quantized"); ok && s != "" {
		base = s
	}
	f := c.fresh(base)
	c.inits = append(c.inits, floatTensor(f, t.Dims, data))
	c.rep.WeightTensors++
	c.rep.WeightElements += len(data)
	return f, nil
}
