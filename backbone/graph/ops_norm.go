package graph

import (
	"fmt"
	"math"
)

// ---- BatchNormalization (inference, frozen statistics) ----

// bnK computes y = scale·(x − mean)/sqrt(var + ε) + bias per channel (axis 1). scale and bias
// are inputs 1 and 2 (constants or parameters); mean and var are frozen.
type bnK[T float] struct {
	mean, invStd []float64
}

func (k *bnK[T]) check(in []*tensor[T]) (n, c, inner int, err error) {
	x := in[0]
	if len(x.shape) < 2 {
		return 0, 0, 0, fmt.Errorf("input %s has no channel axis", shapeString(x.shape))
	}
	c = x.shape[1]
	if c != len(k.mean) || len(in[1].data) != c || len(in[2].data) != c {
		return 0, 0, 0, fmt.Errorf("input %s has %d channels; scale, bias, mean and var must have as many values (%d, %d, %d)", shapeString(x.shape), c, len(in[1].data), len(in[2].data), len(k.mean))
	}
	return x.shape[0], c, numel(x.shape[2:]), nil
}

func (k *bnK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	n, c, inner, err := k.check(in)
	if err != nil {
		return nil, err
	}
	x, sc, b := in[0], in[1].data, in[2].data
	y := a.uninit(x.shape)
	for i := 0; i < n; i++ {
		for ch := 0; ch < c; ch++ {
			a := T(float64(sc[ch]) * k.invStd[ch])
			o := T(float64(b[ch]) - float64(sc[ch])*k.invStd[ch]*k.mean[ch])
			off := (i*c + ch) * inner
			for j, v := range x.data[off : off+inner] {
				y.data[off+j] = a*v + o
			}
		}
	}
	return y, nil
}

func (k *bnK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	n, c, inner, _ := k.check(in)
	x, sc := in[0], in[1].data
	for i := 0; i < n; i++ {
		for ch := 0; ch < c; ch++ {
			off := (i*c + ch) * inner
			gs := g.data[off : off+inner]
			if gin[0] != nil {
				a := T(float64(sc[ch]) * k.invStd[ch])
				dx := gin[0].data[off : off+inner]
				for j, v := range gs {
					dx[j] += a * v
				}
			}
			if gin[1] != nil || gin[2] != nil {
				var sg, sgx float64
				for j, v := range gs {
					sg += float64(v)
					sgx += float64(v) * (float64(x.data[off+j]) - k.mean[ch]) * k.invStd[ch]
				}
				if gin[1] != nil {
					gin[1].data[ch] += T(sgx)
				}
				if gin[2] != nil {
					gin[2].data[ch] += T(sg)
				}
			}
		}
	}
	return nil
}

// ---- Softmax, LpNormalization ----

// softmaxK normalizes over groups: legacy (opset < 13) flattens the input to 2-D at axis and
// normalizes each row; otherwise only along axis.
type softmaxK[T float] struct {
	axis   int
	legacy bool
}

// layout returns (outer, n, inner): groups of n values with stride inner.
func axisLayout(shape []int, axis int, legacy bool) (outer, n, inner int, err error) {
	r := len(shape)
	if legacy {
		ax := axis
		if ax < 0 {
			ax += r
		}
		if ax < 0 || ax > r {
			return 0, 0, 0, fmt.Errorf("axis %d out of range for input %s", axis, shapeString(shape))
		}
		return numel(shape[:ax]), numel(shape[ax:]), 1, nil
	}
	ax, ok := normAxis(axis, r)
	if !ok {
		return 0, 0, 0, fmt.Errorf("axis %d out of range for input %s", axis, shapeString(shape))
	}
	return numel(shape[:ax]), shape[ax], numel(shape[ax+1:]), nil
}

func (k *softmaxK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	x := in[0]
	outer, n, inner, err := axisLayout(x.shape, k.axis, k.legacy)
	if err != nil {
		return nil, err
	}
	y := a.uninit(x.shape)
	for o := 0; o < outer; o++ {
		for j := 0; j < inner; j++ {
			base := o*n*inner + j
			mx := math.Inf(-1)
			for i := 0; i < n; i++ {
				mx = math.Max(mx, float64(x.data[base+i*inner]))
			}
			var s float64
			for i := 0; i < n; i++ {
				e := math.Exp(float64(x.data[base+i*inner]) - mx)
				y.data[base+i*inner] = T(e)
				s += e
			}
			for i := 0; i < n; i++ {
				y.data[base+i*inner] = T(float64(y.data[base+i*inner]) / s)
			}
		}
	}
	return y, nil
}

// backward: dx = y ⊙ (g − Σ g⊙y) per group.
func (k *softmaxK[T]) backward(a *arena[T], in []*tensor[T], y, g *tensor[T], gin []*tensor[T]) error {
	outer, n, inner, _ := axisLayout(y.shape, k.axis, k.legacy)
	for o := 0; o < outer; o++ {
		for j := 0; j < inner; j++ {
			base := o*n*inner + j
			var s float64
			for i := 0; i < n; i++ {
				s += float64(g.data[base+i*inner]) * float64(y.data[base+i*inner])
			}
			for i := 0; i < n; i++ {
				p := base + i*inner
				gin[0].data[p] += T(float64(y.data[p]) * (float64(g.data[p]) - s))
			}
		}
	}
	return nil
}

// lpNormK divides by the L1 or L2 norm along axis; a zero norm gives 0 (and a zero gradient).
type lpNormK[T float] struct {
	axis, p int
}

func (k *lpNormK[T]) norms(x *tensor[T]) (outer, n, inner int, norms []float64, err error) {
	outer, n, inner, err = axisLayout(x.shape, k.axis, false)
	if err != nil {
		return
	}
	norms = make([]float64, outer*inner)
	for o := 0; o < outer; o++ {
		for j := 0; j < inner; j++ {
			base := o*n*inner + j
			var s float64
			for i := 0; i < n; i++ {
				v := float64(x.data[base+i*inner])
				if k.p == 1 {
					s += math.Abs(v)
				} else {
					s += v * v
				}
			}
			if k.p == 2 {
				s = math.Sqrt(s)
			}
			norms[o*inner+j] = s
		}
	}
	return
}

func (k *lpNormK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	x := in[0]
	outer, n, inner, norms, err := k.norms(x)
	if err != nil {
		return nil, err
	}
	y := a.tensor(x.shape)
	for o := 0; o < outer; o++ {
		for j := 0; j < inner; j++ {
			nm := norms[o*inner+j]
			if nm == 0 {
				continue
			}
			base := o*n*inner + j
			for i := 0; i < n; i++ {
				y.data[base+i*inner] = T(float64(x.data[base+i*inner]) / nm)
			}
		}
	}
	return y, nil
}

// backward: p=2: dx = (g − y·Σ g·y)/‖x‖; p=1: dx = g/‖x‖₁ − sign(x)·Σ g·x/‖x‖₁².
func (k *lpNormK[T]) backward(a *arena[T], in []*tensor[T], y, g *tensor[T], gin []*tensor[T]) error {
	x := in[0]
	outer, n, inner, norms, _ := k.norms(x)
	for o := 0; o < outer; o++ {
		for j := 0; j < inner; j++ {
			nm := norms[o*inner+j]
			if nm == 0 {
				continue
			}
			base := o*n*inner + j
			var s float64
			for i := 0; i < n; i++ {
				p := base + i*inner
				if k.p == 2 {
					s += float64(g.data[p]) * float64(y.data[p])
				} else {
					s += float64(g.data[p]) * float64(x.data[p])
				}
			}
			for i := 0; i < n; i++ {
				p := base + i*inner
				gv := float64(g.data[p])
				var d float64
				if k.p == 2 {
					d = (gv - float64(y.data[p])*s) / nm
				} else {
					sg := 0.0
					if xv := x.data[p]; xv > 0 {
						sg = 1
					} else if xv < 0 {
						sg = -1
					}
					d = gv/nm - sg*s/(nm*nm)
				}
				gin[0].data[p] += T(d)
			}
		}
	}
	return nil
}
