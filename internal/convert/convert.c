//go:build cgo && amd64

#include <immintrin.h>
#include "convert.h"

// Four values per instruction (vcvtpd2ps, vcvtps2pd), rounded to nearest even as Go's
// conversions round; the remainder one at a time.

__attribute__((target("avx"))) void gl_f64_to_f32(float *dst, const double *src, long n) {
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		_mm_storeu_ps(dst + i, _mm256_cvtpd_ps(_mm256_loadu_pd(src + i)));
		_mm_storeu_ps(dst + i + 4, _mm256_cvtpd_ps(_mm256_loadu_pd(src + i + 4)));
	}
	for (; i < n; i++) dst[i] = (float)src[i];
}

__attribute__((target("avx"))) void gl_f32_to_f64(double *dst, const float *src, long n) {
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		_mm256_storeu_pd(dst + i, _mm256_cvtps_pd(_mm_loadu_ps(src + i)));
		_mm256_storeu_pd(dst + i + 4, _mm256_cvtps_pd(_mm_loadu_ps(src + i + 4)));
	}
	for (; i < n; i++) dst[i] = (double)src[i];
}

int gl_cvt_supported(void) { return __builtin_cpu_supports("avx"); }
