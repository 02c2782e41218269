package head

import (
	"math"
	"math/rand"
	"testing"
)

// The input-layer kernels match naive loops, in both output layouts, on sizes large enough to run
// on several goroutines.
func TestKernels(t *testing.T) {
	const out, in, n = 64, 100, 50 // out*in*n > parallelMin
	if out*in*n < parallelMin {
		t.Fatal("sizes too small to exercise the parallel path")
	}
	rng := rand.New(rand.NewSource(8))
	w, b := make([]float64, out*in), make([]float64, out)
	x64, x32 := make([]float64, n*in), make([]float32, n*in)
	g64, g32 := make([]float64, n*out), make([]float32, n*out)
	for i := range w {
		w[i] = rng.NormFloat64()
	}
	for i := range b {
		b[i] = rng.NormFloat64()
	}
	for i := range x32 {
		x32[i] = float32(rng.NormFloat64())
		x64[i] = float64(x32[i])
	}
	for i := range g32 {
		g32[i] = float32(rng.NormFloat64())
		g64[i] = float64(g32[i])
	}
	for _, layout := range []struct {
		name   string
		so, si int
	}{{"(n, out)", 1, out}, {"(out, n)", n, 1}} {
		y64, y32 := make([]float64, n*out), make([]float32, n*out)
		linearKernel(y64, w, b, x64, out, in, n, layout.so, layout.si, dot64)
		linearKernel(y32, w, b, x32, out, in, n, layout.so, layout.si, dot32)
		dw64, db64 := make([]float64, out*in), make([]float64, out)
		dw32, db32 := make([]float64, out*in), make([]float64, out)
		weightGradKernel(dw64, db64, g64, x64, out, in, n, layout.so, layout.si, axpy64)
		weightGradKernel(dw32, db32, g32, x32, out, in, n, layout.so, layout.si, axpy32)
		for o := 0; o < out; o++ {
			for i := 0; i < n; i++ {
				want := b[o]
				for k := 0; k < in; k++ {
					want += w[o*in+k] * x64[i*in+k]
				}
				got := y64[o*layout.so+i*layout.si]
				if math.Abs(got-want) > 1e-12*math.Max(1, math.Abs(want)) {
					t.Fatalf("%s: float64 y[%d][%d] = %g, want %g", layout.name, i, o, got, want)
				}
				if got := float64(y32[o*layout.so+i*layout.si]); math.Abs(got-want) > 1e-4*math.Max(1, math.Abs(want)) {
					t.Fatalf("%s: float32 y[%d][%d] = %g, want %g", layout.name, i, o, got, want)
				}
			}
			wantB := 0.0
			for i := 0; i < n; i++ {
				wantB += g64[o*layout.so+i*layout.si]
			}
			if math.Abs(db64[o]-wantB) > 1e-12*math.Max(1, math.Abs(wantB)) || math.Abs(db32[o]-wantB) > 1e-4*math.Max(1, math.Abs(wantB)) {
				t.Fatalf("%s: db[%d] = %g (float64), %g (float32), want %g", layout.name, o, db64[o], db32[o], wantB)
			}
			for k := 0; k < in; k++ {
				want := 0.0
				for i := 0; i < n; i++ {
					want += g64[o*layout.so+i*layout.si] * x64[i*in+k]
				}
				if math.Abs(dw64[o*in+k]-want) > 1e-12*math.Max(1, math.Abs(want)) || math.Abs(dw32[o*in+k]-want) > 1e-4*math.Max(1, math.Abs(want)) {
					t.Fatalf("%s: dw[%d][%d] = %g (float64), %g (float32), want %g", layout.name, o, k, dw64[o*in+k], dw32[o*in+k], want)
				}
			}
		}
	}
}
