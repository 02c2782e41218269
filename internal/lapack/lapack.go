// Package lapack holds the dense linear algebra that gonum does in pure Go where OpenBLAS's
// LAPACK does it much faster: the leading eigenvectors of a symmetric matrix (the PCA start of
// the head, 1280×1280: about 17 s in gonum's EigenSym, well under a second in LAPACK's dsyevr).
// Builds with cgo and without -tags noopenblas call OpenBLAS (Debian's libopenblas, as
// internal/matmul); others use gonum.
package lapack

import (
	"fmt"

	"gonum.org/v1/gonum/mat"
)

// SymEigTop returns the k largest eigenvalues of the symmetric d×d matrix a (row-major, both
// triangles set; a is overwritten) in descending order, and their unit eigenvectors as k rows of
// d values. An eigenvector's sign is whatever the solver gives.
func SymEigTop(a []float64, d, k int) (vals, vecs []float64, err error) {
	if d < 1 || k < 1 || k > d || len(a) != d*d {
		return nil, nil, fmt.Errorf("lapack: the %d largest eigenvalues of a %d×%d matrix of %d values", k, d, d, len(a))
	}
	return symEigTop(a, d, k)
}

// symEigTopGonum is SymEigTop with gonum's EigenSym (all eigenpairs, then the top k).
func symEigTopGonum(a []float64, d, k int) (vals, vecs []float64, err error) {
	var eig mat.EigenSym
	if !eig.Factorize(mat.NewSymDense(d, a), true) {
		return nil, nil, fmt.Errorf("lapack: the eigendecomposition of a %d×%d matrix did not converge", d, d)
	}
	all := eig.Values(nil)
	var v mat.Dense
	eig.VectorsTo(&v)
	vals, vecs = make([]float64, k), make([]float64, k*d)
	for r := 0; r < k; r++ { // ascending order: the last k columns, largest first
		col := d - 1 - r
		vals[r] = all[col]
		for j := 0; j < d; j++ {
			vecs[r*d+j] = v.At(j, col)
		}
	}
	return vals, vecs, nil
}
