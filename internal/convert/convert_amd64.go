//go:build cgo && amd64

package convert

/*
#cgo CFLAGS: -O3
#include "convert.h"
*/
import "C"

import "unsafe"

var avx = C.gl_cvt_supported() != 0

func f64ToF32(dst []float32, src []float64) bool {
	if !avx {
		return false
	}
	C.gl_f64_to_f32((*C.float)(unsafe.Pointer(&dst[0])), (*C.double)(unsafe.Pointer(&src[0])), C.long(len(src)))
	return true
}

func f32ToF64(dst []float64, src []float32) bool {
	if !avx {
		return false
	}
	C.gl_f32_to_f64((*C.double)(unsafe.Pointer(&dst[0])), (*C.float)(unsafe.Pointer(&src[0])), C.long(len(src)))
	return true
}
