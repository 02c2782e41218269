//go:build cgo && amd64

package matmul

/*
#cgo CFLAGS: -O3
#include "matmul.h"
*/
import "C"

import "unsafe"

// isa is the kernel this CPU runs: AVX-512, AVX2+FMA or SSE2.
var isa = C.gl_matmul_isa()

// Kernel names the kernel ABt runs on this machine: "avx512", "avx2" or "sse2" (amd64 with cgo),
// "go" elsewhere.
func Kernel() string {
	switch isa {
	case C.GL_ISA_AVX512:
		return "avx512"
	case C.GL_ISA_AVX2:
		return "avx2"
	}
	return "sse2"
}

// runnable lists the kernels this CPU can run, the chosen one first (tests run them all).
func runnable() []C.int {
	var out []C.int
	for i := isa; i >= C.GL_ISA_SSE2; i-- {
		out = append(out, i)
	}
	return out
}

func abt(c []float32, ldc int, a []float32, m int, b []float32, n, k int) { abtWith(isa, c, ldc, a, m, b, n, k) }

func abtWith(isa C.int, c []float32, ldc int, a []float32, m int, b []float32, n, k int) {
	rc := C.gl_abt(isa, (*C.float)(unsafe.Pointer(&c[0])), C.long(ldc), (*C.float)(unsafe.Pointer(&a[0])), C.long(m),
		(*C.float)(unsafe.Pointer(&b[0])), C.long(n), C.long(k))
	if rc != 0 {
		panic("matmul: out of memory for the packing buffers")
	}
}
