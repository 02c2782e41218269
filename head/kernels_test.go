package head

import (
	"math"
	"math/rand"
	"testing"

	"github.com/grouploss/pipeline/internal/parallel"
)

// The input-layer kernels match naive loops, in both output layouts, on sizes large enough to run
// on several goroutines.
func TestKernels(t *testing.T) {
	const out, in, n = 64, 100, 50 // out*in*n > parallel.MinWork
	if out*in*n < parallel.MinWork {
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
	w32 := make([]float32, out*in) // linear32 writes float32(W), which inputGrad32 reads
	for _, layout := range []struct {
		name   string
		so, si int
	}{{"(n, out)", 1, out}, {"(out, n)", n, 1}} {
		y64 := make([]float64, n*out)
		linearKernel(y64, w, b, x64, out, in, n, layout.so, layout.si, dot64)
		dw64, db64 := make([]float64, out*in), make([]float64, out)
		weightGradKernel(dw64, db64, g64, x64, out, in, n, layout.so, layout.si, axpy64)
		var y32 []float32
		var dw32 []float64
		if layout.so == 1 { // the float32 kernels write the (n, out) layout only
			y32, dw32 = make([]float32, n*out), make([]float64, out*in)
			linear32(y32, x32, w32, w, b, n, in, out)
			for i, v := range w {
				if w32[i] != float32(v) {
					t.Fatalf("linear32 left w32[%d] = %v, want float32(%v)", i, w32[i], v)
				}
			}
			weightGrad32(dw32, make([]float32, out*in), g32, x32, n, in, out)
		}
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
				if y32 == nil {
					continue
				}
				if got := float64(y32[o*layout.so+i*layout.si]); math.Abs(got-want) > 1e-4*math.Max(1, math.Abs(want)) {
					t.Fatalf("%s: float32 y[%d][%d] = %g, want %g", layout.name, i, o, got, want)
				}
			}
			wantB := 0.0
			for i := 0; i < n; i++ {
				wantB += g64[o*layout.so+i*layout.si]
			}
			if math.Abs(db64[o]-wantB) > 1e-12*math.Max(1, math.Abs(wantB)) {
				t.Fatalf("%s: db[%d] = %g, want %g", layout.name, o, db64[o], wantB)
			}
			for k := 0; k < in; k++ {
				want := 0.0
				for i := 0; i < n; i++ {
					want += g64[o*layout.so+i*layout.si] * x64[i*in+k]
				}
				if math.Abs(dw64[o*in+k]-want) > 1e-12*math.Max(1, math.Abs(want)) {
					t.Fatalf("%s: float64 dw[%d][%d] = %g, want %g", layout.name, o, k, dw64[o*in+k], want)
				}
				if dw32 != nil && math.Abs(dw32[o*in+k]-want) > 1e-4*math.Max(1, math.Abs(want)) {
					t.Fatalf("%s: float32 dw[%d][%d] = %g, want %g", layout.name, o, k, dw32[o*in+k], want)
				}
			}
		}
	}
	// The input gradient dx (n, in) = g (n, out) · W, both dtypes.
	dx64, dx32 := make([]float64, n*in), make([]float32, n*in)
	inputGradKernel(dx64, g64, w, out, in, n)
	inputGrad32(dx32, g32, w32, n, in, out)
	for i := 0; i < n; i++ {
		for k := 0; k < in; k++ {
			want := 0.0
			for o := 0; o < out; o++ {
				want += g64[i*out+o] * w[o*in+k]
			}
			if math.Abs(dx64[i*in+k]-want) > 1e-12*math.Max(1, math.Abs(want)) || math.Abs(float64(dx32[i*in+k])-want) > 1e-4*math.Max(1, math.Abs(want)) {
				t.Fatalf("dx[%d][%d] = %g (float64), %g (float32), want %g", i, k, dx64[i*in+k], dx32[i*in+k], want)
			}
		}
	}
}
