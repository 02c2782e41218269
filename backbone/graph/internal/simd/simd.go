// Package simd holds float32 kernels of package graph in C with AVX2 and FMA, for amd64 builds
// with cgo on CPUs that have both (Supported); elsewhere graph runs its Go kernels. They are the
// loops the Go compiler leaves scalar where a step spends its time: depthwise convolutions with
// stride 1 (depthwise.c) and the clip of MobileNetV2's ReLU6 with its gradient (clip.c). Planes
// are NCHW: sample i's channel ch at (i·channels + ch)·plane.
package simd

// DepthwiseShape is a stride-1 depthwise convolution: N samples, C input channels, Mult output channels
// per input channel (output channel o reads input channel o/Mult), H×W input and OH×OW output
// planes, a KH×KW kernel with dilations DH, DW, and top and left padding PT, PL (the bottom and
// right ones follow from OH and OW). Its layout is depthwise.h's gl_dw_shape.
type DepthwiseShape struct{ N, C, Mult, H, W, OH, OW, KH, KW, DH, DW, PT, PL int }

// DepthwiseMaxTaps is the largest kernel (KH·KW) that DepthwiseBackW takes (depthwise.c's GL_DW_MAX_TAPS).
const DepthwiseMaxTaps = 49
