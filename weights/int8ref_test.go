package weights

// Exact integer reference for the quantized ops of the tests: integer accumulation, then
// requantization of the real value with rounding half to even and saturation, as the ONNX
// QLinear* definitions specify (no 16-bit intermediate saturation, unlike onnxruntime's u8s8
// kernels on CPUs without AVX-512 VNNI / AVX-VNNI).

import (
	"fmt"
	"math"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

// qtensor is a quantized NCHW tensor with integer values q.
type qtensor struct {
	q     []int32
	dims  []int
	scale float32
	zero  int32
	elem  onnx.TensorProto_DataType
}

// real returns (q - zero) * scale as float32, DequantizeLinear's arithmetic.
func (x qtensor) real() []float32 {
	out := make([]float32, len(x.q))
	for i, v := range x.q {
		out[i] = float32(v-x.zero) * x.scale
	}
	return out
}

// requant returns saturate(roundHalfEven(v) + zero) for the element type elem.
func requant(v float64, zero int32, elem onnx.TensorProto_DataType) int32 {
	lo, hi, err := quantRange(elem)
	if err != nil {
		panic(err)
	}
	r := math.RoundToEven(v) + float64(zero)
	return int32(math.Max(float64(lo), math.Min(float64(hi), r)))
}

// refQuantize is QuantizeLinear: saturate(round(x / scale) + zero), x / scale in float32.
func refQuantize(x []float32, dims []int, scale float32, zero int32, elem onnx.TensorProto_DataType) qtensor {
	q := make([]int32, len(x))
	for i, v := range x {
		q[i] = requant(float64(v/scale), zero, elem)
	}
	return qtensor{q: q, dims: dims, scale: scale, zero: zero, elem: elem}
}

type convSpec struct {
	strides, dilations [2]int
	pads               [4]int // top, left, bottom, right
	group              int
}

// refQLinearConv is QLinearConv in exact arithmetic: x NCHW, w [M, C/group, KH, KW] integers with
// per-output-channel (or single) scales ws and zero points wz, int32 bias b (nil for none).
func refQLinearConv(x qtensor, w []int32, wdims [4]int, ws []float32, wz []int32, b []int32,
	ys float32, yz int32, yelem onnx.TensorProto_DataType, sp convSpec) qtensor {
	n, c, h, wd := x.dims[0], x.dims[1], x.dims[2], x.dims[3]
	m, cg, kh, kw := wdims[0], wdims[1], wdims[2], wdims[3]
	if cg*sp.group != c || m%sp.group != 0 {
		panic(fmt.Sprintf("refQLinearConv: %d channels, weights %v, group %d", c, wdims, sp.group))
	}
	mg := m / sp.group
	sh, sw, dh, dw := sp.strides[0], sp.strides[1], sp.dilations[0], sp.dilations[1]
	oh := (h+sp.pads[0]+sp.pads[2]-(dh*(kh-1)+1))/sh + 1
	ow := (wd+sp.pads[1]+sp.pads[3]-(dw*(kw-1)+1))/sw + 1
	xc := make([]int32, len(x.q))
	for i, v := range x.q {
		xc[i] = v - x.zero
	}
	pick := func(v []float32, i int) float32 {
		if len(v) == 1 {
			return v[0]
		}
		return v[i]
	}
	pickZ := func(v []int32, i int) int32 {
		if len(v) == 1 {
			return v[0]
		}
		return v[i]
	}
	out := make([]int32, n*m*oh*ow)
	acc := make([]int32, oh*ow)
	for in := 0; in < n; in++ {
		for om := 0; om < m; om++ {
			g := om / mg
			var bias int32
			if b != nil {
				bias = b[om]
			}
			for i := range acc {
				acc[i] = bias
			}
			z := pickZ(wz, om)
			for ic := 0; ic < cg; ic++ {
				plane := xc[(in*c+g*cg+ic)*h*wd:][:h*wd]
				for ikh := 0; ikh < kh; ikh++ {
					for ikw := 0; ikw < kw; ikw++ {
						wv := w[((om*cg+ic)*kh+ikh)*kw+ikw] - z
						if wv == 0 {
							continue
						}
						// output columns whose input column ow*sw - left + ikw*dw lies in [0, wd)
						off := ikw*dw - sp.pads[1]
						owLo := 0
						if off < 0 {
							owLo = (-off + sw - 1) / sw
						}
						owHi := ow
						if lim := (wd - 1 - off) / sw; wd-1-off < 0 {
							owHi = 0
						} else if lim+1 < owHi {
							owHi = lim + 1
						}
						for y := 0; y < oh; y++ {
							ih := y*sh - sp.pads[0] + ikh*dh
							if ih < 0 || ih >= h {
								continue
							}
							row := plane[ih*wd:][:wd]
							a := acc[y*ow:][:ow]
							for xo := owLo; xo < owHi; xo++ {
								a[xo] += wv * row[xo*sw+off]
							}
						}
					}
				}
			}
			mult := float64(x.scale) * float64(pick(ws, om)) / float64(ys)
			o := out[(in*m+om)*oh*ow:][:oh*ow]
			for i, v := range acc {
				o[i] = requant(float64(v)*mult, yz, yelem)
			}
		}
	}
	return qtensor{q: out, dims: []int{n, m, oh, ow}, scale: ys, zero: yz, elem: yelem}
}

// refQLinearBinary is QLinearAdd ("Add") or QLinearMul ("Mul") on same-shape operands.
func refQLinearBinary(op string, a, b qtensor, ys float32, yz int32, yelem onnx.TensorProto_DataType) qtensor {
	if len(a.q) != len(b.q) {
		panic("refQLinearBinary: shapes differ")
	}
	out := make([]int32, len(a.q))
	for i := range out {
		ra := float64(a.q[i]-a.zero) * float64(a.scale)
		rb := float64(b.q[i]-b.zero) * float64(b.scale)
		r := ra + rb
		if op == "Mul" {
			r = ra * rb
		}
		out[i] = requant(r/float64(ys), yz, yelem)
	}
	return qtensor{q: out, dims: a.dims, scale: ys, zero: yz, elem: yelem}
}

// refQLinearGlobalAveragePool averages each NCHW plane: [N, C, 1, 1].
func refQLinearGlobalAveragePool(x qtensor, ys float32, yz int32, yelem onnx.TensorProto_DataType) qtensor {
	n, c, hw := x.dims[0], x.dims[1], x.dims[2]*x.dims[3]
	out := make([]int32, n*c)
	for i := range out {
		var sum int64
		for _, v := range x.q[i*hw:][:hw] {
			sum += int64(v - x.zero)
		}
		out[i] = requant(float64(sum)*float64(x.scale)/(float64(hw)*float64(ys)), yz, yelem)
	}
	return qtensor{q: out, dims: []int{n, c, 1, 1}, scale: ys, zero: yz, elem: yelem}
}

// refRun evaluates the quantized model m exactly on the NCHW input x up to the tensor stop,
// supporting QuantizeLinear, QLinearConv, QLinearAdd and QLinearGlobalAveragePool.
func refRun(m *onnx.ModelProto, x []float32, dims []int, stop string) (qtensor, error) {
	g := m.Graph
	consts := map[string]*onnx.TensorProto{}
	for _, t := range g.Initializer {
		consts[t.Name] = t
	}
	ints := func(name string) []int32 {
		v, err := tensorInts(consts[name])
		if err != nil {
			panic(err)
		}
		return v
	}
	floats := func(name string) []float32 {
		v, err := tensorFloats(consts[name])
		if err != nil {
			panic(err)
		}
		return v
	}
	elem := func(name string) onnx.TensorProto_DataType { return onnx.TensorProto_DataType(consts[name].DataType) }
	vals := map[string]qtensor{}
	for _, n := range g.Node {
		in := n.Input
		var y qtensor
		switch n.OpType {
		case "QuantizeLinear":
			y = refQuantize(x, dims, floats(in[1])[0], ints(in[2])[0], elem(in[2]))
		case "QLinearConv":
			wt := consts[in[3]]
			var wdims [4]int
			for i, d := range wt.Dims {
				wdims[i] = int(d)
			}
			sp := convSpec{strides: [2]int{1, 1}, dilations: [2]int{1, 1}, group: 1}
			for _, a := range n.Attribute {
				switch a.Name {
				case "strides":
					sp.strides = [2]int{int(a.Ints[0]), int(a.Ints[1])}
				case "dilations":
					sp.dilations = [2]int{int(a.Ints[0]), int(a.Ints[1])}
				case "pads":
					sp.pads = [4]int{int(a.Ints[0]), int(a.Ints[1]), int(a.Ints[2]), int(a.Ints[3])}
				case "group":
					sp.group = int(a.I)
				}
			}
			var b []int32
			if len(in) > 8 {
				b = ints(in[8])
			}
			y = refQLinearConv(vals[in[0]], ints(in[3]), wdims, floats(in[4]), ints(in[5]), b,
				floats(in[6])[0], ints(in[7])[0], elem(in[7]), sp)
		case "QLinearAdd":
			y = refQLinearBinary("Add", vals[in[0]], vals[in[3]], floats(in[6])[0], ints(in[7])[0], elem(in[7]))
		case "QLinearGlobalAveragePool":
			y = refQLinearGlobalAveragePool(vals[in[0]], floats(in[3])[0], ints(in[4])[0], elem(in[4]))
		default:
			return qtensor{}, fmt.Errorf("refRun: node %q: op %q before %q", n.Name, n.OpType, stop)
		}
		vals[n.Output[0]] = y
		if n.Output[0] == stop {
			return y, nil
		}
	}
	return qtensor{}, fmt.Errorf("refRun: %q not produced", stop)
}
