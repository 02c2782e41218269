package head

import (
	"gonum.org/v1/gonum/blas"

	"github.com/grouploss/pipeline/internal/convert"
	"github.com/grouploss/pipeline/internal/matmul"
	"github.com/grouploss/pipeline/internal/parallel"
)

// The float32 input layer's products run on OpenBLAS's sgemm (internal/matmul): for
// (54×1280)·(1280×512) and its gradients it takes about a quarter of the CPU time of the dot and
// axpy kernels of kernels.go (gonum's SSE loops), which remain for float64 graphs and Embed. Each
// product is split over GOMAXPROCS goroutines by parallelRows, one sgemm call per range, with
// the transposes left to sgemm. W is kept in float64 (the optimizer's precision) and converted
// once per step, each goroutine its own rows (internal/convert).

var sgemm = matmul.BLAS{}.Sgemm

// linear32 computes y (n, out) = x (n, in) · w (out, in)ᵀ + b, writing w32 = float32(w) (the
// copy the backward products reuse).
func linear32(y, x, w32 []float32, w, b []float64, n, in, out int) {
	parallel.Range(out, out*in*n, func(lo, hi int) {
		convert.F64ToF32(w32[lo*in:hi*in], w[lo*in:hi*in])
		sgemm(blas.NoTrans, blas.Trans, n, hi-lo, in, 1, x, in, w32[lo*in:], in, 0, y[lo:], out)
	})
	for i := 0; i < n; i++ {
		row := y[i*out : (i+1)*out]
		for o, v := range b {
			row[o] += float32(v)
		}
	}
}

// weightGrad32 computes dw (out, in) = g (n, out)ᵀ · x (n, in), through dw32.
func weightGrad32(dw []float64, dw32, g, x []float32, n, in, out int) {
	parallel.Range(out, out*in*n, func(lo, hi int) {
		sgemm(blas.Trans, blas.NoTrans, hi-lo, in, n, 1, g[lo:], out, x, in, 0, dw32[lo*in:], in)
		convert.F32ToF64(dw[lo*in:hi*in], dw32[lo*in:hi*in])
	})
}

// inputGrad32 computes dx (n, in) = g (n, out) · w32 (out, in).
func inputGrad32(dx, g, w32 []float32, n, in, out int) {
	parallel.Range(in, out*in*n, func(lo, hi int) {
		sgemm(blas.NoTrans, blas.NoTrans, n, hi-lo, out, 1, g, out, w32[lo:], in, 0, dx[lo:], in)
	})
}
