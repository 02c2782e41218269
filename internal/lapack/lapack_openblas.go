//go:build cgo && !noopenblas

package lapack

/*
#cgo LDFLAGS: -lopenblas
#include <stddef.h>
#include <cblas.h>

// LAPACK's Fortran dsyevr (OpenBLAS exports it); the three character arguments' hidden lengths
// come last, as gfortran passes them.
void dsyevr_(const char *jobz, const char *range, const char *uplo, const int *n, double *a, const int *lda,
	const double *vl, const double *vu, const int *il, const int *iu, const double *abstol, int *m, double *w,
	double *z, const int *ldz, int *isuppz, double *work, const int *lwork, int *iwork, const int *liwork,
	int *info, size_t ljobz, size_t lrange, size_t luplo);

static int gl_dsyevr_top(double *a, int n, int k, double *w, double *z, double *work, int lwork, int *iwork,
		int liwork, int *isuppz, int *m) {
	int il = n - k + 1, iu = n, info = 0;
	double vl = 0, vu = 0, abstol = 0;
	dsyevr_("V", "I", "L", &n, a, &n, &vl, &vu, &il, &iu, &abstol, m, w, z, &n, isuppz, work, &lwork, iwork,
		&liwork, &info, 1, 1, 1);
	return info;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

func init() {
	// As internal/matmul: every call runs on its caller's thread, never on OpenBLAS's own pool.
	C.openblas_set_num_threads(1)
}

// symEigTop calls dsyevr for eigenvalues il..iu = d−k+1..d (ascending) and their vectors. The
// matrix is symmetric, so row-major is column-major; each returned column is a vector's d
// consecutive values.
func symEigTop(a []float64, d, k int) (vals, vecs []float64, err error) {
	w, z := make([]float64, d), make([]float64, d*k)
	isuppz := make([]C.int, 2*k)
	var m C.int
	// Workspace query (lwork = liwork = −1), then the work.
	var wq C.double
	var iq C.int
	info := C.gl_dsyevr_top((*C.double)(unsafe.Pointer(&a[0])), C.int(d), C.int(k), (*C.double)(unsafe.Pointer(&w[0])),
		(*C.double)(unsafe.Pointer(&z[0])), &wq, -1, &iq, -1, &isuppz[0], &m)
	if info != 0 {
		return nil, nil, fmt.Errorf("lapack: dsyevr workspace query: info %d", int(info))
	}
	work, iwork := make([]float64, int(wq)), make([]C.int, int(iq))
	info = C.gl_dsyevr_top((*C.double)(unsafe.Pointer(&a[0])), C.int(d), C.int(k), (*C.double)(unsafe.Pointer(&w[0])),
		(*C.double)(unsafe.Pointer(&z[0])), (*C.double)(unsafe.Pointer(&work[0])), C.int(len(work)), &iwork[0],
		C.int(len(iwork)), &isuppz[0], &m)
	switch {
	case info != 0:
		return nil, nil, fmt.Errorf("lapack: dsyevr of a %d×%d matrix: info %d", d, d, int(info))
	case int(m) != k:
		return nil, nil, fmt.Errorf("lapack: dsyevr found %d of the %d largest eigenvalues", int(m), k)
	}
	vals, vecs = make([]float64, k), make([]float64, k*d)
	for r := 0; r < k; r++ { // ascending: the last found first
		c := k - 1 - r
		vals[r] = w[c]
		copy(vecs[r*d:(r+1)*d], z[c*d:(c+1)*d])
	}
	return vals, vecs, nil
}
