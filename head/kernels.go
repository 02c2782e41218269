package head

import (
	"github.com/grouploss/pipeline/internal/parallel"
	"gonum.org/v1/gonum/blas/gonum"
)

// The input layer (the largest: In×out weights against a small batch) runs in the gorgonia graph
// as linearOp (linearop.go): float64 graphs and Embed with these kernels (long dot products
// forward, long axpy rows for the weight gradient: gonum's Dgemm splits every dimension into
// 64-wide blocks, which for (54×1280)·(1280×512) leaves calls of length 64), float32 graphs with
// OpenBLAS (kernels_f32.go).

var blasImpl gonum.Implementation

type float interface{ ~float32 | ~float64 }

func dot64(n int, x, y []float64) float64 { return blasImpl.Ddot(n, x, 1, y, 1) }
func axpy64(n int, a float64, x, y []float64) {
	blasImpl.Daxpy(n, a, x, 1, y, 1)
}

// linearKernel computes y = x Wᵀ + b for x (n, in) row-major of type T and W (out, in), b (out)
// of type V, writing y[i][o] to dst[o*so+i*si] (so=n, si=1 gives the (out, n) transpose; so=1,
// si=out gives (n, out)). Each goroutine converts its rows of W to T just before using them.
// It panics on short slices (a programmer bug).
func linearKernel[T, V float](dst []T, w, b []V, x []T, out, in, n, so, si int, dot func(int, []T, []T) T) {
	_ = w[out*in-1]
	_ = x[n*in-1]
	_ = b[out-1]
	parallel.Range(out, out*in*n, func(lo, hi int) {
		wo := make([]T, in)
		for o := lo; o < hi; o++ {
			for k, v := range w[o*in : (o+1)*in] {
				wo[k] = T(v)
			}
			bo := T(b[o])
			for i := 0; i < n; i++ {
				dst[o*so+i*si] = dot(in, wo, x[i*in:(i+1)*in]) + bo
			}
		}
	})
}

// weightGradKernel computes the weight and bias gradients of a linear layer from the gradient g
// of its output (element [i][o] at g[o*so+i*si], as in linearKernel) and its input x (n, in):
// dw (out, in) = gᵀ x and db (out) = column sums of g, accumulated in T and stored as D.
// It overwrites dw and db.
func weightGradKernel[T, D float](dw, db []D, g, x []T, out, in, n, so, si int, axpy func(int, T, []T, []T)) {
	_ = dw[out*in-1]
	_ = x[n*in-1]
	_ = g[(out-1)*so+(n-1)*si]
	parallel.Range(out, out*in*n, func(lo, hi int) {
		row := make([]T, in)
		for o := lo; o < hi; o++ {
			clear(row)
			var s T
			for i := 0; i < n; i++ {
				gi := g[o*so+i*si]
				s += gi
				if gi != 0 {
					axpy(in, gi, x[i*in:(i+1)*in], row)
				}
			}
			for k, v := range row {
				dw[o*in+k] = D(v)
			}
			db[o] = D(s)
		}
	})
}

// inputGradKernel computes the gradient of a linear layer's input, dx (n, in) = g (n, out) · W
// (out, in), accumulated in float64 and stored as T. It overwrites dx.
func inputGradKernel[T float](dx, g []T, w []float64, out, in, n int) {
	_ = dx[n*in-1]
	_ = g[n*out-1]
	_ = w[out*in-1]
	parallel.Range(n, n*out*in, func(lo, hi int) {
		acc := make([]float64, in)
		for i := lo; i < hi; i++ {
			clear(acc)
			for o, gi := range g[i*out : (i+1)*out] {
				if gi != 0 {
					axpy64(in, float64(gi), w[o*in:(o+1)*in], acc)
				}
			}
			for k, v := range acc {
				dx[i*in+k] = T(v)
			}
		}
	})
}
