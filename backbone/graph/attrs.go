package graph

import (
	"fmt"
	"math"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/internal/onnxpb"
)

// ---- attributes ----

func attrInts(n *onnx.NodeProto, name string) []int {
	a := onnxpb.Attr(n, name)
	if a == nil {
		return nil
	}
	r := make([]int, len(a.GetInts()))
	for i, v := range a.GetInts() {
		r[i] = int(v)
	}
	return r
}

func attrFloat(n *onnx.NodeProto, name string, def float64) float64 {
	if a := onnxpb.Attr(n, name); a != nil {
		return float64(a.GetF())
	}
	return def
}

func attrString(n *onnx.NodeProto, name, def string) string {
	if a := onnxpb.Attr(n, name); a != nil {
		return string(a.GetS())
	}
	return def
}

// scalarInput returns the single value of an optional constant input (ok false when absent).
func scalarInput(n *onnx.NodeProto, i int, consts map[string]*onnx.TensorProto) (v float64, ok bool, err error) {
	if i >= len(n.GetInput()) || n.GetInput()[i] == "" {
		return 0, false, nil
	}
	name := n.GetInput()[i]
	ct := consts[name]
	if ct == nil {
		return 0, false, unsupported("input %q must be a constant", name)
	}
	d, err := floatsOf(ct)
	if err != nil {
		return 0, false, fmt.Errorf("input %q: %w", name, err)
	}
	if len(d) != 1 {
		return 0, false, fmt.Errorf("input %q has %d values, want a scalar", name, len(d))
	}
	return d[0], true, nil
}

func parseWindow(n *onnx.NodeProto, pool bool) (window, error) {
	w := window{
		kernel: attrInts(n, "kernel_shape"), strides: attrInts(n, "strides"),
		dilations: attrInts(n, "dilations"), pads: attrInts(n, "pads"),
		ceil: onnxpb.AttrIntOr(n, "ceil_mode", 0) != 0,
	}
	switch ap := attrString(n, "auto_pad", "NOTSET"); ap {
	case "NOTSET", "":
	case "SAME_UPPER":
		w.autoPad = padSameUpper
	case "SAME_LOWER":
		w.autoPad = padSameLower
	case "VALID":
		w.autoPad = padValid
	default:
		return w, fmt.Errorf("unknown auto_pad %q", ap)
	}
	if pool && w.kernel == nil {
		return w, fmt.Errorf("kernel_shape is required")
	}
	if nd := len(w.kernel); w.kernel != nil && nd != 1 && nd != 2 {
		return w, unsupported("%d-D windows (only 1-D and 2-D)", nd)
	}
	for _, p := range w.pads {
		if p < 0 {
			return w, fmt.Errorf("negative pads %v", w.pads)
		}
	}
	return w, nil
}

// parseAttrs validates a node's attributes and returns its op-specific settings and the inputs
// consumed at decode time (constant shapes, bounds, statistics), which the node does not read
// at run time.
func parseAttrs(n *onnx.NodeProto, opset int64, consts map[string]*onnx.TensorProto) (any, map[int]bool, error) {
	fixed := map[int]bool{}
	in := n.GetInput()
	switch n.GetOpType() {
	case "Conv":
		w, err := parseWindow(n, false)
		if err != nil {
			return nil, nil, err
		}
		if w.ceil {
			return nil, nil, fmt.Errorf("ceil_mode is not a Conv attribute")
		}
		if ct := consts[in[1]]; ct != nil && len(ct.GetDims()) != 3 && len(ct.GetDims()) != 4 {
			return nil, nil, unsupported("weight %q of rank %d: only 1-D and 2-D convolutions", in[1], len(ct.GetDims()))
		}
		return &convAttrs{window: w, group: int(onnxpb.AttrIntOr(n, "group", 1))}, fixed, nil
	case "MaxPool", "AveragePool":
		w, err := parseWindow(n, true)
		if err != nil {
			return nil, nil, err
		}
		if n.GetOpType() == "MaxPool" && onnxpb.AttrIntOr(n, "storage_order", 0) != 0 && len(n.GetOutput()) > 1 {
			return nil, nil, unsupported("storage_order")
		}
		return &poolAttrs{window: w, isMax: n.GetOpType() == "MaxPool", includePad: onnxpb.AttrIntOr(n, "count_include_pad", 0) != 0}, fixed, nil
	case "Gemm":
		return &gemmAttrs{alpha: attrFloat(n, "alpha", 1), beta: attrFloat(n, "beta", 1),
			transA: onnxpb.AttrIntOr(n, "transA", 0) != 0, transB: onnxpb.AttrIntOr(n, "transB", 0) != 0}, fixed, nil
	case "Add", "Sub", "Mul":
		if onnxpb.Attr(n, "axis") != nil {
			return nil, nil, unsupported("legacy broadcast with an axis attribute")
		}
		return nil, fixed, nil
	case "Clip":
		c := &clipAttrs{lo: math.Inf(-1), hi: math.Inf(1)}
		if opset < 11 {
			c.lo, c.hi = attrFloat(n, "min", c.lo), attrFloat(n, "max", c.hi)
			return c, fixed, nil
		}
		for i, dst := range []*float64{&c.lo, &c.hi} {
			v, ok, err := scalarInput(n, i+1, consts)
			if err != nil {
				return nil, nil, err
			}
			if ok {
				*dst = v
			}
			fixed[i+1] = true
		}
		return c, fixed, nil
	case "BatchNormalization":
		if onnxpb.AttrIntOr(n, "training_mode", 0) != 0 {
			return nil, nil, unsupported("training_mode=1 (batch statistics)")
		}
		if opset < 9 && onnxpb.AttrIntOr(n, "spatial", 1) == 0 {
			return nil, nil, unsupported("spatial=0")
		}
		if opset < 7 && onnxpb.AttrIntOr(n, "is_test", 0) == 0 && len(n.GetOutput()) > 1 {
			return nil, nil, unsupported("training mode (is_test=0)")
		}
		if len(in) != 5 {
			return nil, nil, fmt.Errorf("%d inputs, want 5", len(in))
		}
		b := &bnAttrs{eps: attrFloat(n, "epsilon", 1e-5)}
		for i, dst := range []*[]float64{&b.mean, &b.variance} {
			ct := consts[in[3+i]]
			if ct == nil {
				return nil, nil, unsupported("running statistic %q must be a constant", in[3+i])
			}
			d, err := floatsOf(ct)
			if err != nil {
				return nil, nil, err
			}
			*dst = d
			fixed[3+i] = true
		}
		for i := 1; i <= 2; i++ {
			if consts[in[i]] == nil {
				return nil, nil, unsupported("scale and bias must be constants, %q is computed", in[i])
			}
		}
		return b, fixed, nil
	case "Flatten":
		return &reshapeAttrs{flatten: true, axis: int(onnxpb.AttrIntOr(n, "axis", 1))}, fixed, nil
	case "Reshape":
		r := &reshapeAttrs{allowZero: onnxpb.AttrIntOr(n, "allowzero", 0) != 0}
		if opset < 5 {
			a := onnxpb.Attr(n, "shape")
			if a == nil {
				return nil, nil, fmt.Errorf("no shape attribute")
			}
			r.target = append([]int64(nil), a.GetInts()...)
			return r, fixed, nil
		}
		if len(in) < 2 || consts[in[1]] == nil {
			return nil, nil, unsupported("shape input must be a constant (a computed shape, e.g. from Shape, is not supported)")
		}
		s, err := onnxpb.Int64s(consts[in[1]])
		if err != nil {
			return nil, nil, fmt.Errorf("shape %q: %w", in[1], err)
		}
		r.target = s
		fixed[1] = true
		return r, fixed, nil
	case "Concat":
		if onnxpb.Attr(n, "axis") == nil && opset >= 4 {
			return nil, nil, fmt.Errorf("axis is required")
		}
		return &concatAttrs{axis: int(onnxpb.AttrIntOr(n, "axis", 1))}, fixed, nil
	case "Identity", "Relu", "GlobalAveragePool", "MatMul":
		return nil, fixed, nil
	case "Dropout":
		if len(in) > 2 && in[2] != "" {
			ct := consts[in[2]]
			if ct == nil {
				return nil, nil, unsupported("training_mode must be a constant")
			}
			v, err := onnxpb.Floats(ct)
			if err != nil {
				return nil, nil, err
			}
			if len(v) == 1 && v[0] != 0 {
				return nil, nil, unsupported("training_mode=true")
			}
		}
		for i := 1; i < len(in); i++ {
			fixed[i] = true
		}
		return nil, fixed, nil
	case "Softmax":
		if opset < 13 {
			return &softmaxAttrs{axis: int(onnxpb.AttrIntOr(n, "axis", 1)), legacy: true}, fixed, nil
		}
		return &softmaxAttrs{axis: int(onnxpb.AttrIntOr(n, "axis", -1))}, fixed, nil
	case "LpNormalization":
		p := int(onnxpb.AttrIntOr(n, "p", 2))
		if p != 1 && p != 2 {
			return nil, nil, fmt.Errorf("p = %d, want 1 or 2", p)
		}
		return &lpAttrs{axis: int(onnxpb.AttrIntOr(n, "axis", -1)), p: p}, fixed, nil
	}
	return nil, nil, ErrUnsupported
}

type convAttrs struct {
	window
	group int
}

type poolAttrs struct {
	window
	isMax, includePad bool
}

type gemmAttrs struct {
	alpha, beta    float64
	transA, transB bool
}

type clipAttrs struct{ lo, hi float64 }

type bnAttrs struct {
	eps            float64
	mean, variance []float64
}

type reshapeAttrs struct {
	flatten   bool
	axis      int
	target    []int64
	allowZero bool
}

type concatAttrs struct{ axis int }

type softmaxAttrs struct {
	axis   int
	legacy bool
}

type lpAttrs struct{ axis, p int }
