//go:build cgo && amd64

package train

/*
#cgo CFLAGS: -O3
#include "adam.h"
*/
import "C"

import "unsafe"

// adamAVX2 is whether this CPU runs adam.c's kernel.
var adamAVX2 = C.gl_adam_supported() != 0

// adamKernel runs adamStepGo's arithmetic with adam.c's AVX2 kernel on CPUs that have it, 4
// elements at a time, the remainder in Go.
func adamKernel(ws, gs, m, v []float64, k adamConsts) {
	n := len(ws) - len(ws)%4
	if !adamAVX2 || n == 0 {
		adamStepGo(ws, gs, m, v, k)
		return
	}
	gs, m, v = gs[:len(ws)], m[:len(ws)], v[:len(ws)]
	C.gl_adam((*C.double)(unsafe.Pointer(&ws[0])), (*C.double)(unsafe.Pointer(&gs[0])), (*C.double)(unsafe.Pointer(&m[0])),
		(*C.double)(unsafe.Pointer(&v[0])), C.long(n), C.double(k.b1), C.double(k.b2), C.double(k.c1), C.double(k.c2),
		C.double(k.gdecay), C.double(k.wscale), C.double(k.step), C.double(k.isb), C.double(k.eps))
	adamStepGo(ws[n:], gs[n:], m[n:], v[n:], k)
}
