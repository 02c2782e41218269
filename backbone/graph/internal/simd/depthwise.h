// The float32 depthwise convolution kernels with AVX2 and FMA (depthwise.c); see simd_amd64.go.

// gl_dw_shape mirrors DepthwiseShape: n samples, c input channels, mult output channels per input
// channel, h×w input and oh×ow output planes, a kh×kw kernel with dilations dh, dw and top and
// left padding pt, pl; stride 1. Go's int is 64-bit on amd64, as long is here.
typedef struct {
	long n, c, mult, h, w, oh, ow, kh, kw, dh, dw, pt, pl;
} gl_dw_shape;

int gl_dw_supported(void);
int gl_dw_forward(const float *x, const float *w, float *y, const gl_dw_shape *s, long o0, long o1);
int gl_dw_back_x(float *dx, const float *w, const float *gy, const gl_dw_shape *s, long c0, long c1);
int gl_dw_back_w(const float *x, float *dw, const float *gy, const gl_dw_shape *s, long o0, long o1);
