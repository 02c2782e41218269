package head

import "github.com/grouploss/pipeline/internal/matmul"

// The float32 input layer's products run on internal/matmul (OpenBLAS's sgemm): for
// (54×1280)·(1280×512) and its gradients it takes about a quarter of the CPU time of the dot and
// axpy kernels of kernels.go (gonum's SSE loops), which remain for float64 graphs and Embed. Each
// product is split over GOMAXPROCS goroutines by parallelRows, one OpenBLAS call per range.

// linear32 computes y (n, out) = x (n, in) · w (out, in)ᵀ + b.
func linear32(y, x, w []float32, b []float64, n, in, out int) {
	parallelRows(out, out*in*n, func(lo, hi int) {
		matmul.ABt(y[lo:], out, x, n, w[lo*in:], hi-lo, in)
	})
	for i := 0; i < n; i++ {
		row := y[i*out : (i+1)*out]
		for o, v := range b {
			row[o] += float32(v)
		}
	}
}

// weightGrad32 computes dw (out, in) = g (n, out)ᵀ · x (n, in), with gT (out·n) and xT (in·n) as
// scratch for the transposes that matmul's A·Bᵀ form needs.
func weightGrad32(dw []float64, dw32, gT, xT, g, x []float32, n, in, out int) {
	transpose(gT, g, n, out)
	transpose(xT, x, n, in)
	parallelRows(out, out*in*n, func(lo, hi int) {
		matmul.ABt(dw32[lo*in:], in, gT[lo*n:], hi-lo, xT, in, n)
		for k, v := range dw32[lo*in : hi*in] {
			dw[lo*in+k] = float64(v)
		}
	})
}

// inputGrad32 computes dx (n, in) = g (n, out) · w (out, in), with wT (in·out) the transpose of w.
func inputGrad32(dx, g, wT []float32, n, in, out int) {
	parallelRows(in, out*in*n, func(lo, hi int) {
		matmul.ABt(dx[lo:], in, g, n, wT[lo*out:], hi-lo, out)
	})
}

// transposeBlock is the tile edge of transpose: tiles of 32×32 float32 stay in L1.
const transposeBlock = 32

// transpose writes the (cols, rows) transpose of src (rows, cols) into dst.
func transpose[S, D float](dst []D, src []S, rows, cols int) {
	_ = src[rows*cols-1]
	_ = dst[rows*cols-1]
	for i0 := 0; i0 < rows; i0 += transposeBlock {
		for j0 := 0; j0 < cols; j0 += transposeBlock {
			for i := i0; i < min(rows, i0+transposeBlock); i++ {
				for j := j0; j < min(cols, j0+transposeBlock); j++ {
					dst[j*rows+i] = D(src[i*cols+j])
				}
			}
		}
	}
}
