// The float32 clip kernels with AVX (clip.c); see simd_amd64.go.
void gl_clip(const float *x, float *y, long n, float lo, float hi);
void gl_clip_grad(const float *x, const float *g, float *dx, long n, float lo, float hi);
