//go:build cgo && amd64

package dwconv

/*
#cgo CFLAGS: -O3
#include "depthwise.h"
*/
import "C"

import "unsafe"

// Supported is whether this CPU runs the kernels (AVX2 and FMA).
var Supported = C.gl_dw_supported() != 0

// The layout depthwise.c reads a Shape with.
var _ = [1]struct{}{}[unsafe.Sizeof(Shape{})-unsafe.Sizeof(C.gl_dw_shape{})]

func ptr(v []float32) *C.float { return (*C.float)(unsafe.Pointer(&v[0])) }

// Forward sets the output planes y of output channels [lo, hi) to the convolution of x with the
// kernels w (KH·KW taps per output channel): each output the sum of its valid taps in (ki, kj)
// order with fused multiply-adds from zero.
func Forward(x, w, y []float32, s *Shape, lo, hi int) {
	check(C.gl_dw_forward(ptr(x), ptr(w), ptr(y), (*C.gl_dw_shape)(unsafe.Pointer(s)), C.long(lo), C.long(hi)))
}

// BackX sets the input gradient planes dx of input channels [lo, hi) from the output gradient gy.
func BackX(dx, w, gy []float32, s *Shape, lo, hi int) {
	check(C.gl_dw_back_x(ptr(dx), ptr(w), ptr(gy), (*C.gl_dw_shape)(unsafe.Pointer(s)), C.long(lo), C.long(hi)))
}

// BackW adds the weight gradient of output channels [lo, hi) to dw (s.KH·s.KW at most MaxTaps).
func BackW(x, dw, gy []float32, s *Shape, lo, hi int) {
	check(C.gl_dw_back_w(ptr(x), ptr(dw), ptr(gy), (*C.gl_dw_shape)(unsafe.Pointer(s)), C.long(lo), C.long(hi)))
}

// check panics when a kernel could not allocate its padded planes (a few kilobytes: the
// process is out of memory, as a failed Go allocation would find it).
func check(rc C.int) {
	if rc != 0 {
		panic("dwconv: out of memory for a padded plane")
	}
}
