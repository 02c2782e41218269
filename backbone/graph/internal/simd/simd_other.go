//go:build !cgo || !amd64

package simd

// Supported is false: without cgo on amd64 there are no kernels here.
const Supported = false

func Depthwise(x, w, y []float32, s *DepthwiseShape, lo, hi int)        { panic("simd: not supported") }
func DepthwiseBackX(dx, w, gy []float32, s *DepthwiseShape, lo, hi int) { panic("simd: not supported") }
func DepthwiseBackW(x, dw, gy []float32, s *DepthwiseShape, lo, hi int) { panic("simd: not supported") }
func Clip(x, y []float32, lo, hi float32)                               { panic("simd: not supported") }
func ClipGrad(x, g, dx []float32, lo, hi float32)                       { panic("simd: not supported") }
