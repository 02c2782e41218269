//go:build cgo && amd64

package simd

/*
#cgo CFLAGS: -O3
#include "depthwise.h"
#include "clip.h"
*/
import "C"

import "unsafe"

// Supported is whether this CPU runs the kernels (AVX2 and FMA).
var Supported = C.gl_dw_supported() != 0

// The layout depthwise.c reads a DepthwiseShape with.
var _ = [1]struct{}{}[unsafe.Sizeof(DepthwiseShape{})-unsafe.Sizeof(C.gl_dw_shape{})]

func ptr(v []float32) *C.float { return (*C.float)(unsafe.Pointer(&v[0])) }

// Depthwise sets the output planes y of output channels [lo, hi) to the convolution of x with the
// kernels w (KH·KW taps per output channel): each output the sum of its valid taps in (ki, kj)
// order with fused multiply-adds from zero.
func Depthwise(x, w, y []float32, s *DepthwiseShape, lo, hi int) {
	check(C.gl_dw_forward(ptr(x), ptr(w), ptr(y), (*C.gl_dw_shape)(unsafe.Pointer(s)), C.long(lo), C.long(hi)))
}

// DepthwiseBackX sets the input gradient planes dx of input channels [lo, hi) from the output gradient gy.
func DepthwiseBackX(dx, w, gy []float32, s *DepthwiseShape, lo, hi int) {
	check(C.gl_dw_back_x(ptr(dx), ptr(w), ptr(gy), (*C.gl_dw_shape)(unsafe.Pointer(s)), C.long(lo), C.long(hi)))
}

// DepthwiseBackW adds the weight gradient of output channels [lo, hi) to dw (s.KH·s.KW at most DepthwiseMaxTaps).
func DepthwiseBackW(x, dw, gy []float32, s *DepthwiseShape, lo, hi int) {
	check(C.gl_dw_back_w(ptr(x), ptr(dw), ptr(gy), (*C.gl_dw_shape)(unsafe.Pointer(s)), C.long(lo), C.long(hi)))
}

// check panics when a kernel could not allocate its padded planes (a few kilobytes: the
// process is out of memory, as a failed Go allocation would find it).
func check(rc C.int) {
	if rc != 0 {
		panic("simd: out of memory for a padded plane")
	}
}

// Clip sets y[i] = min(max(x[i], lo), hi) for every i of x (a NaN stays NaN).
func Clip(x, y []float32, lo, hi float32) {
	if len(x) == 0 {
		return
	}
	_ = y[len(x)-1]
	C.gl_clip(ptr(x), ptr(y), C.long(len(x)), C.float(lo), C.float(hi))
}

// ClipGrad sets dx[i] = g[i] where lo < x[i] < hi, and 0 elsewhere, for every i of x.
func ClipGrad(x, g, dx []float32, lo, hi float32) {
	if len(x) == 0 {
		return
	}
	_, _ = g[len(x)-1], dx[len(x)-1]
	C.gl_clip_grad(ptr(x), ptr(g), ptr(dx), C.long(len(x)), C.float(lo), C.float(hi))
}
