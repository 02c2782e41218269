//go:build !cgo || noopenblas

package lapack

func symEigTop(a []float64, d, k int) (vals, vecs []float64, err error) {
	return symEigTopGonum(a, d, k)
}
