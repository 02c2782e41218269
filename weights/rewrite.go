package weights

import (
	"fmt"
	"math"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

// passThrough lists default-domain ops that move a quantized data input (input 0) to their first
// output (all outputs for Split) without arithmetic, so they move the real values alike.
var passThrough = map[string]bool{
	"Reshape": true, "Flatten": true, "Transpose": true, "Squeeze": true, "Unsqueeze": true,
	"Identity": true, "MaxPool": true, "Gather": true, "Slice": true, "Split": true, "Expand": true,
	"Tile": true, "DepthToSpace": true, "SpaceToDepth": true,
}

func (c *converter) node(n *onnx.NodeProto) error {
	known := isDefaultDomain(n.Domain) || n.Domain == "com.microsoft"
	switch {
	case known && n.OpType == "QuantizeLinear":
		return c.quantizeLinear(n)
	case known && n.OpType == "DequantizeLinear":
		return c.dequantizeLinear(n)
	case known && n.OpType == "QLinearConv":
		return c.qlinearConv(n)
	case known && n.OpType == "QLinearMatMul":
		return c.qlinearMatMul(n)
	case known && (n.OpType == "QLinearAdd" || n.OpType == "QLinearMul"):
		return c.qlinearBinary(n, strings.TrimPrefix(n.OpType, "QLinear"))
	case known && n.OpType == "QLinearGlobalAveragePool":
		return c.qlinearGlobalAveragePool(n)
	case isQuantizedOp(n):
		return fmt.Errorf("quantized op (domain %q) has no float conversion: %w", n.Domain, ErrUnsupported)
	}
	return c.other(n)
}

func input(n *onnx.NodeProto, i int) string {
	if i < len(n.Input) {
		return n.Input[i]
	}
	return ""
}

func attrInt(n *onnx.NodeProto, name string, def int64) int64 {
	for _, a := range n.Attribute {
		if a.Name == name {
			return a.I
		}
	}
	return def
}

func checkArity(n *onnx.NodeProto, min, max, outs int) error {
	if len(n.Input) < min || len(n.Input) > max {
		return fmt.Errorf("%d inputs, want %d to %d", len(n.Input), min, max)
	}
	if len(n.Output) != outs {
		return fmt.Errorf("%d outputs, want %d", len(n.Output), outs)
	}
	return nil
}

func (c *converter) quantizeLinear(n *onnx.NodeProto) error {
	if err := checkArity(n, 2, 3, 1); err != nil {
		return err
	}
	x, y := n.Input[0], n.Output[0]
	p, err := c.scalarParams(n.Input[1], input(n, 2))
	if err != nil {
		return err
	}
	if _, ok := c.quant[x]; ok {
		return fmt.Errorf("input %q is already quantized", x)
	}
	if t, ok := c.consts[x]; ok {
		v, err := tensorFloats(t)
		if err != nil {
			return err
		}
		qmin, qmax, err := quantRange(p.elem)
		if err != nil {
			return err
		}
		for i, f := range v {
			q := math.RoundToEven(float64(f/p.scale)) + float64(p.zero)
			q = math.Max(float64(qmin), math.Min(float64(qmax), q))
			v[i] = float32(int32(q)-p.zero) * p.scale
		}
		c.inits = append(c.inits, floatTensor(y, t.Dims, v))
		c.quant[y] = p
		c.rep.WeightTensors++
		c.rep.WeightElements += len(v)
		c.rep.Converted[n.OpType]++
		return nil
	}
	delete(c.nodeNames, n.Name)
	if err := c.clip(n, n.Name, x, y, n.Input[1], input(n, 2)); err != nil {
		return err
	}
	c.rep.Converted[n.OpType]++
	return nil
}

func (c *converter) dequantizeLinear(n *onnx.NodeProto) error {
	if err := checkArity(n, 2, 3, 1); err != nil {
		return err
	}
	x, y := n.Input[0], n.Output[0]
	if _, ok := c.quant[x]; ok {
		f, err := c.operand(x, n.Input[1], input(n, 2), 0, false)
		if err != nil {
			return err
		}
		delete(c.nodeNames, n.Name)
		c.emit(n, n.Name, "Identity", []string{f}, []string{y}, nil)
		c.rep.Converted[n.OpType]++
		return nil
	}
	t, ok := c.consts[x]
	if !ok {
		return fmt.Errorf("input %q is neither a constant nor the output of a quantized op this converter knows: %w", x, ErrUnsupported)
	}
	scales, zeros, _, err := c.params(n.Input[1], input(n, 2))
	if err != nil {
		return err
	}
	data, err := c.dequantizeConst(t, x, scales, zeros, int(attrInt(n, "axis", 1)), true)
	if err != nil {
		return err
	}
	c.inits = append(c.inits, floatTensor(y, t.Dims, data))
	c.rep.Converted[n.OpType]++
	return nil
}

func (c *converter) qlinearConv(n *onnx.NodeProto) error {
	if err := checkArity(n, 8, 9, 1); err != nil {
		return err
	}
	x, err := c.operand(n.Input[0], n.Input[1], n.Input[2], 0, false)
	if err != nil {
		return err
	}
	w, err := c.operand(n.Input[3], n.Input[4], n.Input[5], 0, true)
	if err != nil {
		return err
	}
	inputs := []string{x, w}
	if b := input(n, 8); b != "" {
		xp, err := c.scalarParams(n.Input[1], n.Input[2])
		if err != nil {
			return err
		}
		ws, _, _, err := c.params(n.Input[4], n.Input[5])
		if err != nil {
			return err
		}
		bf, err := c.bias(b, xp.scale, ws)
		if err != nil {
			return err
		}
		inputs = append(inputs, bf)
	}
	return c.replace(n, "Conv", inputs, n.Attribute, n.Input[6], n.Input[7])
}

func (c *converter) qlinearMatMul(n *onnx.NodeProto) error {
	if err := checkArity(n, 8, 8, 1); err != nil {
		return err
	}
	a, err := c.operand(n.Input[0], n.Input[1], n.Input[2], -2, true) // per row of a
	if err != nil {
		return err
	}
	b, err := c.operand(n.Input[3], n.Input[4], n.Input[5], -1, true) // per column of b
	if err != nil {
		return err
	}
	return c.replace(n, "MatMul", []string{a, b}, nil, n.Input[6], n.Input[7])
}

func (c *converter) qlinearBinary(n *onnx.NodeProto, op string) error {
	if err := checkArity(n, 7, 8, 1); err != nil {
		return err
	}
	a, err := c.operand(n.Input[0], n.Input[1], n.Input[2], 0, false)
	if err != nil {
		return err
	}
	b, err := c.operand(n.Input[3], n.Input[4], n.Input[5], 0, false)
	if err != nil {
		return err
	}
	return c.replace(n, op, []string{a, b}, nil, n.Input[6], input(n, 7))
}

func (c *converter) qlinearGlobalAveragePool(n *onnx.NodeProto) error {
	if err := checkArity(n, 5, 5, 1); err != nil {
		return err
	}
	if attrInt(n, "channels_last", 0) != 0 {
		return fmt.Errorf("channels_last=1: %w", ErrUnsupported)
	}
	x, err := c.operand(n.Input[0], n.Input[1], n.Input[2], 0, false)
	if err != nil {
		return err
	}
	return c.replace(n, "GlobalAveragePool", []string{x}, nil, n.Input[3], n.Input[4])
}

// other keeps a node that is not quantized, checking how it uses quantized values.
func (c *converter) other(n *onnx.NodeProto) error {
	def := isDefaultDomain(n.Domain)
	var first *qparams
	for i, in := range n.Input {
		q, ok := c.quant[in]
		if !ok {
			if def && n.OpType == "Concat" && first != nil {
				return fmt.Errorf("input %q is float, input %q quantized: %w", in, n.Input[0], ErrUnsupported)
			}
			continue
		}
		switch {
		case def && (n.OpType == "Shape" || n.OpType == "Size"):
		case def && passThrough[n.OpType] && i == 0:
			first = &q
		case def && n.OpType == "Concat" && (i == 0 || first != nil && *first == q):
			first = &q
		default:
			return fmt.Errorf("reads quantized tensor %q (input %d) and has no float conversion: %w", in, i, ErrUnsupported)
		}
	}
	if first != nil {
		outs := n.Output[:1]
		if n.OpType == "Split" {
			outs = n.Output
		}
		for _, o := range outs {
			c.quant[o] = *first
		}
		c.rep.PassThrough[n.OpType]++
	}
	c.nodes = append(c.nodes, n)
	return nil
}
