package backbone

import (
	"math"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// inferShapes propagates tensor shapes through the graph for the ops that CNN backbones use
// (float and QLinear). Dims are -1 when dynamic or unknown; a missing entry means the rank is
// unknown. Declared shapes (inputs, outputs, value_info, initializers) seed the map and win
// over inferred ones. It is a best-effort pass: unknown ops leave their outputs unknown.
func inferShapes(g *onnx.GraphProto) map[string][]int64 {
	shapes := make(map[string][]int64)
	inits := onnxpb.Initializers(g)
	for _, t := range g.GetInitializer() {
		shapes[t.GetName()] = append([]int64(nil), t.GetDims()...)
	}
	for _, list := range [][]*onnx.ValueInfoProto{g.GetInput(), g.GetValueInfo(), g.GetOutput()} {
		for _, vi := range list {
			if d, _, ok := onnxpb.Shape(vi); ok {
				shapes[vi.GetName()] = d
			}
		}
	}
	constInts := func(name string) ([]int64, bool) {
		t, ok := inits[name]
		if !ok {
			return nil, false
		}
		v, err := onnxpb.Int64s(t)
		return v, err == nil
	}
	for _, n := range g.GetNode() {
		if len(n.GetOutput()) == 0 || n.GetOutput()[0] == "" {
			continue
		}
		out := n.GetOutput()[0]
		if _, known := shapes[out]; known {
			continue
		}
		in := func(i int) []int64 {
			if i >= len(n.GetInput()) {
				return nil
			}
			return shapes[n.GetInput()[i]]
		}
		var s []int64
		switch n.GetOpType() {
		case "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu",
			"Selu", "Softmax", "LogSoftmax", "BatchNormalization", "InstanceNormalization", "LRN",
			"QuantizeLinear", "DequantizeLinear", "Identity", "Dropout", "Cast", "Erf", "Sqrt", "Exp",
			"Neg", "Abs", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax", "LpNormalization",
			"Gelu", "QuickGelu", "Mish", "Softplus":
			s = clone(in(0))
		case "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum":
			s = in(0)
			for i := 1; i < len(n.GetInput()); i++ {
				s = broadcast(s, in(i))
			}
		case "QLinearAdd", "QLinearMul":
			s = broadcast(in(0), in(3))
		case "Conv":
			s = convShape(n, in(0), in(1), true)
		case "QLinearConv":
			s = convShape(n, in(0), in(3), true)
		case "ConvInteger":
			s = convShape(n, in(0), in(1), true)
		case "MaxPool", "AveragePool", "LpPool", "QLinearAveragePool":
			s = convShape(n, in(0), nil, false)
		case "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "QLinearGlobalAveragePool":
			x := in(0)
			if len(x) >= 3 {
				s = make([]int64, len(x))
				for i := range s {
					s[i] = 1
				}
				if n.GetOpType() == "QLinearGlobalAveragePool" && onnxpb.AttrIntOr(n, "channels_last", 0) == 1 {
					s[0], s[len(s)-1] = x[0], x[len(x)-1]
				} else {
					s[0], s[1] = x[0], x[1]
				}
			}
		case "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2":
			x := in(0)
			axes, ok := reduceAxes(n, constInts)
			if x != nil && ok {
				s = reduceShape(x, axes, onnxpb.AttrIntOr(n, "keepdims", 1) == 1)
			}
		case "Flatten":
			x := in(0)
			axis := int(onnxpb.AttrIntOr(n, "axis", 1))
			if x != nil {
				if axis < 0 {
					axis += len(x)
				}
				if axis >= 0 && axis <= len(x) {
					s = []int64{prod(x[:axis]), prod(x[axis:])}
				}
			}
		case "Reshape":
			if target, ok := constInts(input(n, 1)); ok {
				s = reshapeShape(in(0), target, onnxpb.AttrIntOr(n, "allowzero", 0) == 1)
			}
		case "Squeeze", "Unsqueeze":
			x := in(0)
			var axes []int64
			if a := onnxpb.Attr(n, "axes"); a != nil {
				axes = a.GetInts()
			} else if len(n.GetInput()) > 1 {
				axes, _ = constInts(n.GetInput()[1])
			}
			if x != nil {
				s = squeezeShape(x, axes, n.GetOpType() == "Unsqueeze")
			}
		case "Gemm":
			a, b := in(0), in(1)
			if len(a) == 2 && len(b) == 2 {
				m := a[0]
				if onnxpb.AttrIntOr(n, "transA", 0) == 1 {
					m = a[1]
				}
				k := b[1]
				if onnxpb.AttrIntOr(n, "transB", 0) == 1 {
					k = b[0]
				}
				s = []int64{m, k}
			}
		case "MatMul", "MatMulInteger", "QLinearMatMul":
			a, b := in(0), in(1)
			if n.GetOpType() == "QLinearMatMul" {
				b = in(3)
			}
			if len(a) >= 2 && len(b) == 2 {
				s = append(clone(a[:len(a)-1]), b[1])
			}
		case "Transpose":
			x := in(0)
			if x != nil {
				perm := onnxpb.Attr(n, "perm").GetInts()
				s = make([]int64, len(x))
				for i := range s {
					switch {
					case len(perm) != len(x):
						s[i] = x[len(x)-1-i]
					case perm[i] >= 0 && perm[i] < int64(len(x)):
						s[i] = x[perm[i]]
					default: // invalid perm: onnxruntime will refuse the node
						s[i] = -1
					}
				}
			}
		case "Shape":
			if x := in(0); x != nil {
				s = []int64{int64(len(x))}
			}
		}
		if s != nil {
			shapes[out] = s
		}
	}
	return shapes
}

func clone(s []int64) []int64 {
	if s == nil {
		return nil
	}
	return append([]int64{}, s...)
}

// prod returns the product of dims, or -1 when any is unknown; it saturates at math.MaxInt64
// instead of overflowing (hostile shapes).
func prod(dims []int64) int64 {
	p := int64(1)
	for _, d := range dims {
		if d < 0 {
			return -1
		}
		if d != 0 && p > math.MaxInt64/d {
			p = math.MaxInt64
			continue
		}
		p *= d
	}
	return p
}

func broadcast(a, b []int64) []int64 {
	if a == nil || b == nil {
		return nil
	}
	if len(b) > len(a) {
		a, b = b, a
	}
	s := clone(a)
	off := len(a) - len(b)
	for i, d := range b {
		switch {
		case s[off+i] == 1:
			s[off+i] = d
		case s[off+i] == -1 && d > 1:
			s[off+i] = d
		}
	}
	return s
}

// convShape computes the output shape of Conv-like and pooling ops for NC... inputs; w is the
// weight shape (nil for pooling, which keeps the channels).
func convShape(n *onnx.NodeProto, x, w []int64, hasWeight bool) []int64 {
	if len(x) < 3 {
		return nil
	}
	s := make([]int64, len(x))
	s[0], s[1] = x[0], x[1]
	if hasWeight {
		if len(w) != len(x) {
			return nil
		}
		s[1] = w[0]
	}
	spatial := len(x) - 2
	kernel := onnxpb.Attr(n, "kernel_shape").GetInts()
	if len(kernel) != spatial && hasWeight {
		kernel = w[2:]
	}
	strides := onnxpb.Attr(n, "strides").GetInts()
	dil := onnxpb.Attr(n, "dilations").GetInts()
	pads := onnxpb.Attr(n, "pads").GetInts()
	autoPad := string(onnxpb.Attr(n, "auto_pad").GetS())
	ceilMode := onnxpb.AttrIntOr(n, "ceil_mode", 0) == 1
	for i := 0; i < spatial; i++ {
		in := x[2+i]
		if in < 0 || len(kernel) != spatial {
			s[2+i] = -1
			continue
		}
		st, d := int64(1), int64(1)
		if len(strides) == spatial {
			st = strides[i]
		}
		if st <= 0 { // invalid: onnxruntime will refuse the node
			s[2+i] = -1
			continue
		}
		if len(dil) == spatial {
			d = dil[i]
		}
		k := d*(kernel[i]-1) + 1
		switch autoPad {
		case "SAME_UPPER", "SAME_LOWER":
			s[2+i] = (in + st - 1) / st
		case "VALID":
			s[2+i] = (in-k)/st + 1
		default:
			var p int64
			if len(pads) == 2*spatial {
				p = pads[i] + pads[i+spatial]
			}
			num := in + p - k
			if ceilMode {
				s[2+i] = (num+st-1)/st + 1
			} else {
				s[2+i] = num/st + 1
			}
		}
	}
	return s
}

// reduceAxes returns the axes of a Reduce* node (attribute before opset 18, input after);
// ok is false when they are not constant. Empty axes mean all axes.
func reduceAxes(n *onnx.NodeProto, constInts func(string) ([]int64, bool)) ([]int64, bool) {
	if a := onnxpb.Attr(n, "axes"); a != nil {
		return a.GetInts(), true
	}
	if len(n.GetInput()) > 1 && n.GetInput()[1] != "" {
		return constInts(n.GetInput()[1])
	}
	return nil, true
}

func normAxes(axes []int64, rank int) map[int]bool {
	m := make(map[int]bool, len(axes))
	for _, a := range axes {
		if a < 0 {
			a += int64(rank)
		}
		m[int(a)] = true
	}
	return m
}

func reduceShape(x, axes []int64, keep bool) []int64 {
	set := normAxes(axes, len(x))
	var s []int64
	for i, d := range x {
		switch {
		case len(axes) > 0 && !set[i]:
			s = append(s, d)
		case keep:
			s = append(s, 1)
		}
	}
	if s == nil {
		s = []int64{}
	}
	return s
}

func squeezeShape(x, axes []int64, unsqueeze bool) []int64 {
	if unsqueeze {
		rank := len(x) + len(axes)
		set := normAxes(axes, rank)
		s := make([]int64, 0, rank)
		j := 0
		for i := 0; i < rank; i++ {
			if set[i] {
				s = append(s, 1)
			} else if j < len(x) {
				s = append(s, x[j])
				j++
			}
		}
		return s
	}
	set := normAxes(axes, len(x))
	s := []int64{}
	for i, d := range x {
		if len(axes) == 0 && d == 1 || set[i] {
			continue
		}
		s = append(s, d)
	}
	return s
}

// reshapeShape applies a constant Reshape target to x (which may be nil when unknown). Unknown
// input dims copied by a 0 cancel out when solving for -1.
func reshapeShape(x, target []int64, allowZero bool) []int64 {
	s := clone(target)
	minus := -1
	knownOut := int64(1)
	copied := make(map[int]bool)
	for i, d := range s {
		switch {
		case d == 0 && !allowZero:
			if x == nil || i >= len(x) {
				s[i] = -1
				knownOut = -1
			} else {
				s[i] = x[i]
				copied[i] = true
			}
		case d == -1:
			minus = i
		}
	}
	if minus < 0 {
		return s
	}
	if x == nil || knownOut < 0 {
		return s
	}
	inProd := int64(1)
	for i, d := range x {
		if copied[i] {
			continue // same factor on both sides
		}
		if d < 0 {
			return s
		}
		inProd *= d
	}
	outProd := int64(1)
	for i, d := range s {
		if i == minus || copied[i] {
			continue
		}
		if d < 0 {
			return s
		}
		outProd *= d
	}
	if outProd > 0 && inProd%outProd == 0 {
		s[minus] = inProd / outProd
	}
	return s
}
