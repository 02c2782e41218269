// float64 <-> float32 slice conversion with AVX (convert.c); see convert_amd64.go.
int gl_cvt_supported(void);
void gl_f64_to_f32(float *dst, const double *src, long n);
void gl_f32_to_f64(double *dst, const float *src, long n);
