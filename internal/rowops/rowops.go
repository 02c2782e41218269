// Package rowops holds the small kernels on row-major matrices that training, evaluation, export
// and search share: a matrix is a flat slice of n rows of d values. The kernels do no I/O and
// check nothing beyond what a wrong call would silently get wrong: a length that is not a
// multiple of d, or mismatched lengths, is a programmer bug and panics.
//
// Norms are summed in float64 whatever the element type, so that a float32 row of large
// dimension normalizes to within one rounding of unit length.
package rowops

import (
	"fmt"
	"math"
)

// Float is the element type of the kernels' matrices.
type Float interface{ ~float32 | ~float64 }

func checkShape(n, d int) {
	if d <= 0 || n%d != 0 {
		panic(fmt.Sprintf("rowops: %d values are not rows of %d", n, d))
	}
}

// Gather returns the rows idx of x (rows of d values), in the order of idx, as a new
// (len(idx), d) matrix.
func Gather[T Float](x []T, d int, idx []int) []T {
	checkShape(len(x), d)
	out := make([]T, len(idx)*d)
	for i, k := range idx {
		copy(out[i*d:(i+1)*d], x[k*d:(k+1)*d])
	}
	return out
}

// Mean returns the elementwise mean (a + b) / 2 of two matrices of the same shape, as a new
// slice. It averages the features of images and of their mirror images.
func Mean(a, b []float32) []float32 {
	if len(a) != len(b) {
		panic(fmt.Sprintf("rowops: mean of %d and %d values", len(a), len(b)))
	}
	out := make([]float32, len(a))
	for i := range a {
		out[i] = (a[i] + b[i]) / 2
	}
	return out
}

// ColumnMean returns the mean of the rows of x (rows of d values), summed in float64.
func ColumnMean[T Float](x []T, d int) []float64 {
	checkShape(len(x), d)
	mean := make([]float64, d)
	n := len(x) / d
	if n == 0 {
		return mean
	}
	for i := 0; i < n; i++ {
		for j, v := range x[i*d : (i+1)*d] {
			mean[j] += float64(v)
		}
	}
	for j := range mean {
		mean[j] /= float64(n)
	}
	return mean
}

// Center subtracts the vector mean (length d) from every row of x in place.
func Center[T Float](x []T, mean []T) {
	d := len(mean)
	checkShape(len(x), d)
	for i := 0; i < len(x); i += d {
		row := x[i : i+d]
		for j := range row {
			row[j] -= mean[j]
		}
	}
}

// Mirror writes into dst each run of w values of src reversed, and returns dst (allocated when
// its capacity is below len(src)). For NCHW images of width w it is the left-right mirror image.
// dst must not overlap src.
func Mirror[T Float](dst, src []T, w int) []T {
	checkShape(len(src), w)
	if cap(dst) < len(src) {
		dst = make([]T, len(src))
	}
	dst = dst[:len(src)]
	for r := 0; r < len(src); r += w {
		s, t := src[r:r+w], dst[r:r+w]
		for x := range s {
			t[w-1-x] = s[x]
		}
	}
	return dst
}

// InvNorm returns 1/‖v‖₂, summed and computed in float64, or 0 for the zero vector.
func InvNorm[T Float](v []T) float64 {
	s := 0.0
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	if s == 0 {
		return 0
	}
	return 1 / math.Sqrt(s)
}

// L2Normalize scales every row of x (rows of d values) to unit L2 norm in place; zero rows stay
// zero. Each value is multiplied by the row's inverse norm rounded to T.
func L2Normalize[T Float](x []T, d int) { ScaleNorm(x, d, 1) }

// ScaleNorm scales every nonzero row of x (rows of d values) in place to L2 norm norm: each
// value is multiplied by norm/‖row‖₂ rounded to T. Zero rows stay zero.
func ScaleNorm[T Float](x []T, d int, norm float64) {
	checkShape(len(x), d)
	for i := 0; i < len(x); i += d {
		row := x[i : i+d]
		s := 0.0
		for _, v := range row {
			s += float64(v) * float64(v)
		}
		if s == 0 {
			continue
		}
		inv := T(norm / math.Sqrt(s))
		for j := range row {
			row[j] *= inv
		}
	}
}
