//go:build !cgo || noopenblas

package matmul

import "gonum.org/v1/gonum/blas"

func sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	panic("matmul: sgemm without OpenBLAS")
}

func dgemm(tA, tB blas.Transpose, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	panic("matmul: dgemm without OpenBLAS")
}

const openBLASGemm = false
