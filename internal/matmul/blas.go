package matmul

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// BLAS is gonum's BLAS implementation (the interface gorgonia's graphs call through
// gorgonia.Use) with the general matrix products, Sgemm and Dgemm, on OpenBLAS where it is built:
// gonum's pure-Go Sgemm reaches about 6 GFLOP/s on the Group Loss's small products (54x512 by
// 512x50 or 512x54), a fifth of a head step's CPU time. Every other routine, and the products in
// builds without OpenBLAS, are gonum's. Arguments are checked by gonum's rules first, so a bad
// call panics as it would in gonum rather than reaching C.
type BLAS struct{ gonum.Implementation }

// Sgemm computes C = alpha·op(A)·op(B) + beta·C, row-major, as blas.Float32Level3 specifies.
func (g BLAS) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if !openBLASGemm || m == 0 || n == 0 || k == 0 || !gemmArgsOK(tA, tB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc) {
		g.Implementation.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	flopsDone.Add(uint64(2 * m * n * k))
}

// Dgemm is Sgemm in float64.
func (g BLAS) Dgemm(tA, tB blas.Transpose, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	if !openBLASGemm || m == 0 || n == 0 || k == 0 || !gemmArgsOK(tA, tB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc) {
		g.Implementation.Dgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	dgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	flopsDone.Add(uint64(2 * m * n * k))
}

// gemmArgsOK says whether a row-major gemm's arguments are valid: known transposes, leading
// dimensions at least the rows' lengths and slices long enough. Invalid calls go to gonum,
// which panics with its message.
func gemmArgsOK(tA, tB blas.Transpose, m, n, k, la, lda, lb, ldb, lc, ldc int) bool {
	trans := func(t blas.Transpose) (bool, bool) {
		switch t {
		case blas.NoTrans:
			return false, true
		case blas.Trans, blas.ConjTrans:
			return true, true
		}
		return false, false
	}
	ta, okA := trans(tA)
	tb, okB := trans(tB)
	if !okA || !okB || m < 0 || n < 0 || k < 0 || ldc < max(1, n) {
		return false
	}
	ar, ac := m, k // op(A) is m×k: A is m×k, or k×m when transposed
	if ta {
		ar, ac = k, m
	}
	br, bc := k, n
	if tb {
		br, bc = n, k
	}
	return lda >= max(1, ac) && ldb >= max(1, bc) && la >= (ar-1)*lda+ac && lb >= (br-1)*ldb+bc && lc >= (m-1)*ldc+n
}
