package graph

import (
	"math"
	"math/rand/v2"
	"testing"
)

func naiveGemm(alpha float64, a, b view[float64], beta float64, c view[float64]) {
	m, k, n := len(a.ro), len(a.co), len(b.co)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				s += a.d[a.ro[i]+a.co[p]] * b.d[b.ro[p]+b.co[j]]
			}
			c.d[c.ro[i]+c.co[j]] = alpha*s + beta*c.d[c.ro[i]+c.co[j]]
		}
	}
}

// TestGemm checks the packed product (the assembly and Go micro-kernels, edge panels, several
// depth blocks, transposed and batched views, alpha and beta) against a naive triple loop.
func TestGemm(t *testing.T) {
	asm := useAsm
	defer func() { useAsm = asm }()
	for _, useAsm = range []bool{asm, false} {
		testGemm(t)
	}
}

func testGemm(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, s := range [][3]int{{1, 1, 1}, {5, 7, 3}, {6, 16, 1}, {13, 300, 37}, {200, 40, 70}, {7, 600, 33}} {
		m, k, n := s[0], s[1], s[2]
		a := make([]float64, m*k)
		b := make([]float64, k*n)
		c := make([]float64, m*n)
		for i := range a {
			a[i] = r.NormFloat64()
		}
		for i := range b {
			b[i] = r.NormFloat64()
		}
		for i := range c {
			c[i] = r.NormFloat64()
		}
		// a stored transposed (k×m), b as a batched view: k×n with columns in 1-wide blocks.
		at := make([]float64, m*k)
		for i := 0; i < m; i++ {
			for p := 0; p < k; p++ {
				at[p*m+i] = a[i*k+p]
			}
		}
		av := dense(at, 0, k, m, m).t()
		bv := view[float64]{d: b, ro: seq(k, n), co: batched(n, 1, 1, 0)}
		want := append([]float64(nil), c...)
		naiveGemm(0.5, av, bv, 0.25, dense(want, 0, m, n, n))
		got64 := append([]float64(nil), c...)
		gemm(0.5, av, bv, 0.25, dense(got64, 0, m, n, n))
		a32, b32, c32 := f32(at), f32(b), f32(c)
		gemm(float32(0.5), view[float32]{d: a32, ro: av.ro, co: av.co}, view[float32]{d: b32, ro: bv.ro, co: bv.co}, 0.25, dense(c32, 0, m, n, n))
		for i := range want {
			if d := math.Abs(got64[i] - want[i]); d > 1e-9*(1+math.Abs(want[i])) {
				t.Fatalf("%v float64: c[%d] = %g, want %g", s, i, got64[i], want[i])
			}
			if d := math.Abs(float64(c32[i]) - want[i]); d > 1e-4*math.Sqrt(float64(k))*(1+math.Abs(want[i])) {
				t.Fatalf("%v float32 (asm %v): c[%d] = %g, want %g", s, useAsm, i, c32[i], want[i])
			}
		}
	}
}

func f32(x []float64) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = float32(v)
	}
	return y
}

// TestGemmInPlace checks that products whose full tiles take the micro-kernel's sums in place
// (alpha 1, 16 consecutive columns of C, rows equally spaced) give the accumulator path's
// results bit for bit, on plain rows and on rows of a batched view (unequally spaced across
// samples, as in a 1×1 convolution's backward pass); on AVX-512 CPUs the 12-row kernel's too.
func TestGemmInPlace(t *testing.T) {
	if !useAsm {
		t.Skip("no AVX2 and FMA assembly kernel on this CPU")
	}
	r := rand.New(rand.NewPCG(3, 4))
	fill := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	for _, s := range [][3]int{{6, 16, 16}, {37, 300, 70}, {144, 40, 161}, {20, 600, 48}} {
		m, k, n := s[0], s[1], s[2]
		a, b, c0 := fill(m*k), fill(k*n), fill(m*n*2)
		// C's rows: the first half of the rows at stride n, the rest after a gap of n (two samples).
		cro := make([]int, m)
		for i := range cro {
			cro[i] = i * n
			if i >= m/2 {
				cro[i] += n
			}
		}
		run := func(inPlace bool) []float32 {
			useAsmPaths = inPlace
			defer func() { useAsmPaths = true }()
			c := append([]float32(nil), c0...)
			gemm(1, dense(a, 0, m, k, k), dense(b, 0, k, n, n), 1, view[float32]{d: c, ro: cro, co: seq(n, 1)})
			gemmORT(1, dense(a, 0, m, k, k), dense(b, 0, k, n, n), 1, view[float32]{d: c, ro: cro, co: seq(n, 1)})
			return c
		}
		got, want := run(true), run(false)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%v: c[%d] = %v in place, %v through the accumulator", s, i, got[i], want[i])
			}
		}
		if useAVX512 { // the 12-row AVX-512 kernel against the 6-row AVX2 one, both in place
			useAVX512 = false
			ymm := run(true)
			useAVX512 = true
			for i := range ymm {
				if got[i] != ymm[i] {
					t.Fatalf("%v: c[%d] = %v with AVX-512, %v with AVX2", s, i, got[i], ymm[i])
				}
			}
		}
	}
}

// TestGemmPanelOrder multiplies into an NCHW batch's view as a 1×1 convolution does (C rows are
// channels, columns (sample, position) over 7×7 planes) with beta 0, 0.5 and 1: in float64 against
// the naive loop, and in float32 with the columns of B and C in panelBatched's order against
// batched's order, which must give the same C bit for bit.
func TestGemmPanelOrder(t *testing.T) {
	const nb, m, k, np = 3, 7, 33, 49
	r := rand.New(rand.NewPCG(5, 6))
	a, b, c := make([]float64, m*k), make([]float64, nb*k*np), make([]float64, nb*m*np)
	for _, s := range [][]float64{a, b, c} {
		for i := range s {
			s[i] = r.NormFloat64()
		}
	}
	for _, beta := range []float64{0, 0.5, 1} {
		want := append([]float64(nil), c...)
		naiveGemm(1, dense(a, 0, m, k, k), view[float64]{d: b, ro: seq(k, np), co: batched(nb, k*np, np, 1)}, beta,
			view[float64]{d: want, ro: seq(m, np), co: batched(nb, m*np, np, 1)})
		got := append([]float64(nil), c...)
		gemm(1, dense(a, 0, m, k, k), view[float64]{d: b, ro: seq(k, np), co: panelBatched(nb, k*np, np, 1)}, beta,
			view[float64]{d: got, ro: seq(m, np), co: panelBatched(nb, m*np, np, 1)})
		for i := range want {
			if d := math.Abs(got[i] - want[i]); d > 1e-9*(1+math.Abs(want[i])) {
				t.Fatalf("beta %v: float64 c[%d] = %g, want %g", beta, i, got[i], want[i])
			}
		}
		a32, b32 := f32(a), f32(b)
		run := func(order func(nb, bs, np, ps int) []int) []float32 {
			c32 := f32(c)
			gemmORT(1, dense(a32, 0, m, k, k), view[float32]{d: b32, ro: seq(k, np), co: order(nb, k*np, np, 1)}, float32(beta),
				view[float32]{d: c32, ro: seq(m, np), co: order(nb, m*np, np, 1)})
			return c32
		}
		p, q := run(panelBatched), run(batched)
		for i := range p {
			if p[i] != q[i] {
				t.Fatalf("beta %v: float32 c[%d] = %v in panel order, %v in batched order", beta, i, p[i], q[i])
			}
		}
	}
}

// TestGemmWeightGradient checks the product of a 1×1 convolution's weight gradient,
// dW = dY·Xᵀ over an NCHW batch: A's columns and B's rows are (sample, position) offsets that
// run consecutively inside a sample, B's columns are channels a plane apart, and depth blocks
// cross samples. float64 and float32 against the naive loop.
func TestGemmWeightGradient(t *testing.T) {
	const nb, m, c, np = 3, 13, 37, 49 // nb·np = 147 crosses samples inside every depth block
	r := rand.New(rand.NewPCG(7, 8))
	gy, x := make([]float64, nb*m*np), make([]float64, nb*c*np)
	for _, s := range [][]float64{gy, x} {
		for i := range s {
			s[i] = r.NormFloat64()
		}
	}
	gv := view[float64]{d: gy, ro: seq(m, np), co: batched(nb, m*np, np, 1)}
	xv := view[float64]{d: x, ro: seq(c, np), co: batched(nb, c*np, np, 1)}
	want := make([]float64, m*c)
	naiveGemm(1, gv, xv.t(), 0, dense(want, 0, m, c, c))
	got := make([]float64, m*c)
	gemm(1, gv, xv.t(), 0, dense(got, 0, m, c, c))
	gy32, x32, got32 := f32(gy), f32(x), make([]float32, m*c)
	gemmDepth(32, 1, view[float32]{d: gy32, ro: gv.ro, co: gv.co}, view[float32]{d: x32, ro: xv.ro, co: xv.co}.t(), 0, dense(got32, 0, m, c, c))
	for i := range want {
		if d := math.Abs(got[i] - want[i]); d > 1e-9*(1+math.Abs(want[i])) {
			t.Fatalf("float64 dw[%d] = %g, want %g", i, got[i], want[i])
		}
		if d := math.Abs(float64(got32[i]) - want[i]); d > 1e-4*math.Sqrt(nb*np)*(1+math.Abs(want[i])) {
			t.Fatalf("float32 dw[%d] = %g, want %g", i, got32[i], want[i])
		}
	}
}
