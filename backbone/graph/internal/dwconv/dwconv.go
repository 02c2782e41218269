// Package dwconv holds the float32 depthwise convolutions of package graph with stride 1 in C
// with AVX2 and FMA (depthwise.c), for amd64 builds with cgo on CPUs that have both; elsewhere
// Supported is false and graph runs its Go kernels. Planes are NCHW: sample i's channel ch at
// (i·channels + ch)·plane.
package dwconv

// Shape is a stride-1 depthwise convolution: N samples, C input channels, Mult output channels
// per input channel (output channel o reads input channel o/Mult), H×W input and OH×OW output
// planes, a KH×KW kernel with dilations DH, DW, and top and left padding PT, PL (the bottom and
// right ones follow from OH and OW). Its layout is depthwise.h's gl_dw_shape.
type Shape struct{ N, C, Mult, H, W, OH, OW, KH, KW, DH, DW, PT, PL int }

// MaxTaps is the largest kernel (KH·KW) that BackW takes (depthwise.c's GL_DW_MAX_TAPS).
const MaxTaps = 49
