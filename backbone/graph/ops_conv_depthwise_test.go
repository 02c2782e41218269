package graph

import (
	"math"
	"testing"

	"github.com/grouploss/pipeline/backbone/graph/internal/simd"
)

// TestDepthwiseKernels compares simd's C kernels with the Go ones on stride-1 geometries that
// cover their paths: rows of 2, 4, 7, 8 and more than 8 values, dilation, asymmetric padding,
// padding wider than the kernel reaches, several output channels per input channel and a kernel
// of 1 tap. The forward pass must agree bit for bit (both sum each output's terms in the same
// order with fused multiply-adds); the gradients, summed in another order, to float32 rounding.
func TestDepthwiseKernels(t *testing.T) {
	if !simd.Supported {
		t.Skip("no AVX2 and FMA with cgo on amd64: the Go kernels are the only ones")
	}
	cases := []struct {
		name       string
		g          geom
		n, c, mult int
	}{
		{"7x7 3x3 pad 1 (MobileNetV2's tail)", geom{h: 7, w: 7, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt: 1, pl: 1, pb: 1, pr: 1}, 3, 5, 1},
		{"20x19 3x3 pad 1", geom{h: 20, w: 19, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt: 1, pl: 1, pb: 1, pr: 1}, 2, 4, 1},
		{"4x4 3x3 pad 1", geom{h: 4, w: 4, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt: 1, pl: 1, pb: 1, pr: 1}, 2, 3, 1},
		{"6x8 3x3 pad 1, mult 3", geom{h: 6, w: 8, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt: 1, pl: 1, pb: 1, pr: 1}, 2, 2, 3},
		{"3x2 3x3 pad 1", geom{h: 3, w: 2, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt: 1, pl: 1, pb: 1, pr: 1}, 2, 2, 1},
		{"5x6 3x3 pads 3", geom{h: 5, w: 6, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt: 3, pl: 3, pb: 3, pr: 3}, 2, 2, 1},
		{"11x9 5x3 dilation 2, asymmetric pads, mult 2", geom{h: 11, w: 9, kh: 5, kw: 3, sh: 1, sw: 1, dh: 2, dw: 2, pt: 3, pl: 1, pb: 2, pr: 2}, 2, 3, 2},
		{"9x17 1x1", geom{h: 9, w: 17, kh: 1, kw: 1, sh: 1, sw: 1, dh: 1, dw: 1}, 2, 3, 1},
	}
	r := newRand(11)
	fill := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	for _, tc := range cases {
		g := tc.g
		g.oh = (g.h+g.pt+g.pb-(g.kh-1)*g.dh-1)/g.sh + 1
		g.ow = (g.w+g.pl+g.pr-(g.kw-1)*g.dw-1)/g.sw + 1
		m, kk := tc.c*tc.mult, g.kh*g.kw
		x, w := fill(tc.n*tc.c*g.h*g.w), fill(m*kk)
		gy := fill(tc.n * m * g.oh * g.ow)
		run := func(goKernels bool) (y, dx, dw []float32) {
			noSIMD = goKernels
			defer func() { noSIMD = false }()
			y = fill(len(gy)) // garbage the kernels must overwrite
			dx = fill(len(x))
			dw = make([]float32, len(w))
			for i := range dw {
				dw[i] = 0.5 // the weight gradient is added
			}
			depthwise(x, w, y, g, tc.n, tc.c, tc.mult)
			depthwiseBackX(dx, w, gy, g, tc.n, tc.c, tc.mult)
			depthwiseBackW(x, dw, gy, g, tc.n, tc.c, tc.mult)
			return y, dx, dw
		}
		yC, dxC, dwC := run(false)
		yGo, dxGo, dwGo := run(true)
		for i := range yGo {
			if yC[i] != yGo[i] {
				t.Fatalf("%s: y[%d] = %v (C), %v (Go)", tc.name, i, yC[i], yGo[i])
			}
		}
		for what, p := range map[string][2][]float32{"dx": {dxC, dxGo}, "dw": {dwC, dwGo}} {
			worst, scale := 0.0, 0.0
			for i := range p[1] {
				worst = math.Max(worst, math.Abs(float64(p[0][i]-p[1][i])))
				scale = math.Max(scale, math.Abs(float64(p[1][i])))
			}
			if worst > 1e-6*scale || scale == 0 {
				t.Errorf("%s: %s max |C - Go| = %.3g of max %.3g", tc.name, what, worst, scale)
			}
		}
	}
}

// BenchmarkDepthwise runs the forward and both backward kernels of the MobileNetV2 tail's
// depthwise convolution (960 channels, 7x7, 3x3, batch 54) with simd's kernels and with the
// Go ones.
func BenchmarkDepthwise(b *testing.B) {
	g := geom{h: 7, w: 7, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt: 1, pl: 1, pb: 1, pr: 1, oh: 7, ow: 7}
	const n, c = 54, 960
	r := newRand(5)
	v := func(k int) []float32 {
		s := make([]float32, k)
		for i := range s {
			s[i] = float32(r.NormFloat64())
		}
		return s
	}
	x, w, y, gy, dx, dw := v(n*c*49), v(c*9), v(n*c*49), v(n*c*49), v(n*c*49), v(c*9)
	for _, k := range []struct {
		name string
		goK  bool
	}{{"simd", false}, {"go", true}} {
		b.Run(k.name, func(b *testing.B) {
			noSIMD = k.goK
			defer func() { noSIMD = false }()
			for _, f := range []struct {
				name string
				f    func()
			}{
				{"forward", func() { depthwise(x, w, y, g, n, c, 1) }},
				{"backX", func() { depthwiseBackX(dx, w, gy, g, n, c, 1) }},
				{"backW", func() { depthwiseBackW(x, dw, gy, g, n, c, 1) }},
			} {
				b.Run(f.name, func(b *testing.B) {
					for b.Loop() {
						f.f()
					}
				})
			}
		})
	}
}

// TestClipKernels compares simd's clip and its gradient with the Go loops on values inside, at
// and beyond the bounds (ReLU6's 0 and 6), signed zeros, infinities and a NaN, on lengths
// around the vector width.
func TestClipKernels(t *testing.T) {
	if !simd.Supported {
		t.Skip("no AVX2 and FMA with cgo on amd64: the Go loops are the only ones")
	}
	special := []float32{0, float32(math.Copysign(0, -1)), 6, 5.9999995, 6.0000005, -1e-45, 1e-45, -3, 7,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())}
	r := newRand(13)
	for _, n := range []int{1, 7, 8, 9, 23, 1000} {
		x, g := make([]float32, n), make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64() * 5)
			g[i] = float32(r.NormFloat64())
			if i%3 == 0 {
				x[i] = special[(i/3)%len(special)]
			}
		}
		k := &clipK[float32]{lo: 0, hi: 6}
		run := func(goLoops bool) (y, dx []float32) {
			noSIMD = goLoops
			defer func() { noSIMD = false }()
			a := &arena[float32]{}
			out, err := k.forward(a, []*tensor[float32]{{shape: []int{n}, data: x}})
			if err != nil {
				t.Fatal(err)
			}
			dx = make([]float32, n)
			if err := k.backward(a, []*tensor[float32]{{shape: []int{n}, data: x}}, out, &tensor[float32]{shape: []int{n}, data: g},
				[]*tensor[float32]{{shape: []int{n}, data: dx}}); err != nil {
				t.Fatal(err)
			}
			return append([]float32(nil), out.data...), dx
		}
		yS, dxS := run(false)
		yGo, dxGo := run(true)
		for i := range x {
			same := func(a, b float32) bool { return a == b || (a != a && b != b) }
			if !same(yS[i], yGo[i]) {
				t.Fatalf("n=%d: clip(%v) = %v (simd), %v (Go)", n, x[i], yS[i], yGo[i])
			}
			if x[i] == x[i] && !same(dxS[i], dxGo[i]) { // the Go loop's bit trick passes a NaN's gradient
				t.Fatalf("n=%d: clip gradient at %v = %v (simd), %v (Go)", n, x[i], dxS[i], dxGo[i])
			}
		}
	}
}
