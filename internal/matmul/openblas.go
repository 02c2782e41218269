//go:build cgo && !noopenblas

package matmul

/*
#cgo LDFLAGS: -lopenblas
#include <cblas.h>
*/
import "C"

import "unsafe"

func init() {
	// Callers parallelize over blocks of rows themselves (ParallelABt, one block per worker):
	// every call runs on its caller's thread, never on OpenBLAS's own pool.
	C.openblas_set_num_threads(1)
}

// Kernel names the kernel ABt runs on this machine: "openblas/" and the core type OpenBLAS
// chose for this CPU at run time (e.g. "openblas/Zen", "openblas/SkylakeX"), or "go".
func Kernel() string { return "openblas/" + C.GoString(C.openblas_get_corename()) }

func abt(c []float32, ldc int, a []float32, m int, b []float32, n, k int) {
	C.cblas_sgemm(C.CblasRowMajor, C.CblasNoTrans, C.CblasTrans, C.blasint(m), C.blasint(n), C.blasint(k), 1,
		(*C.float)(unsafe.Pointer(&a[0])), C.blasint(k), (*C.float)(unsafe.Pointer(&b[0])), C.blasint(k), 0,
		(*C.float)(unsafe.Pointer(&c[0])), C.blasint(ldc))
}
