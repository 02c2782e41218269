package weights

import (
	"fmt"
	"math"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

func (c *converter) fresh(base string) string {
	name := base
	for k := 1; c.names[name]; k++ {
		name = fmt.Sprintf("%s_%d", base, k)
	}
	c.names[name] = true
	return name
}

// emit appends a default-domain node made from the quantized node n.
func (c *converter) emit(n *onnx.NodeProto, name, op string, inputs, outputs []string, attrs []*onnx.AttributeProto) {
	nn := name
	for k := 1; c.nodeNames[nn]; k++ {
		nn = fmt.Sprintf("%s_%d", name, k)
	}
	c.nodeNames[nn] = true
	c.nodes = append(c.nodes, &onnx.NodeProto{
		Name:      nn,
		OpType:    op,
		Input:     inputs,
		Output:    outputs,
		Attribute: attrs,
		DocString: fmt.Sprintf("weights: from %s node %q", n.OpType, n.Name),
	})
}

// clip emits Clip(pre) -> out with the range of the quantization (scaleName, zeroName), and
// records out as a quantized value.
func (c *converter) clip(n *onnx.NodeProto, nodeName, pre, out, scaleName, zeroName string) error {
	p, err := c.scalarParams(scaleName, zeroName)
	if err != nil {
		return err
	}
	qmin, qmax, err := quantRange(p.elem)
	if err != nil {
		return fmt.Errorf("zero point %q: %w", zeroName, err)
	}
	if !(p.scale > 0) || math.IsInf(float64(p.scale), 0) {
		return fmt.Errorf("scale %q is %g, want a positive finite number", scaleName, p.scale)
	}
	lo, hi := float32(qmin-p.zero)*p.scale, float32(qmax-p.zero)*p.scale
	if c.opset >= 11 {
		minName, maxName := c.fresh(out+"_clip_min"), c.fresh(out+"_clip_max")
		c.inits = append(c.inits, floatTensor(minName, nil, []float32{lo}), floatTensor(maxName, nil, []float32{hi}))
		c.emit(n, nodeName, "Clip", []string{pre, minName, maxName}, []string{out}, nil)
	} else {
		c.emit(n, nodeName, "Clip", []string{pre}, []string{out}, []*onnx.AttributeProto{
			{Name: "min", Type: onnx.AttributeProto_FLOAT, F: lo},
			{Name: "max", Type: onnx.AttributeProto_FLOAT, F: hi},
		})
	}
	c.quant[out] = p
	c.rep.Clips++
	return nil
}

// replace emits op(inputs) + Clip for the quantized node n whose output is quantized with
// (scaleName, zeroName).
func (c *converter) replace(n *onnx.NodeProto, op string, inputs []string, attrs []*onnx.AttributeProto, scaleName, zeroName string) error {
	out := n.Output[0]
	pre := c.fresh(out + "_unclipped")
	delete(c.nodeNames, n.Name) // the float op takes over the name of the node it replaces
	c.emit(n, n.Name, op, inputs, []string{pre}, attrs)
	if err := c.clip(n, n.Name+"_clip", pre, out, scaleName, zeroName); err != nil {
		return err
	}
	c.rep.Converted[n.OpType]++
	return nil
}
