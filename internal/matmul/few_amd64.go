//go:build cgo && amd64

package matmul

/*
#cgo CFLAGS: -O3
#include "few.h"
*/
import "C"

import "unsafe"

// fewAVX2 is whether this CPU runs few.c's kernel (AVX2 and FMA).
var fewAVX2 = C.gl_few_supported() != 0

// fewABt computes ABt for m <= fewRows with few.c's AVX2 kernel and reports whether it did (false
// on CPUs without AVX2 and FMA).
func fewABt(c []float32, ldc int, a []float32, m int, b []float32, n, k int) bool {
	if !fewAVX2 {
		return false
	}
	C.gl_few((*C.float)(unsafe.Pointer(&c[0])), C.long(ldc), (*C.float)(unsafe.Pointer(&a[0])), C.int(m),
		(*C.float)(unsafe.Pointer(&b[0])), C.long(n), C.long(k))
	return true
}
