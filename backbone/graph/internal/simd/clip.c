//go:build cgo && amd64

#include <immintrin.h>
#include "clip.h"

// gl_clip sets y = min(max(x, lo), hi), 8 values per instruction; a NaN stays NaN (maxps and
// minps return their second operand when either is NaN, and x is the second).
__attribute__((target("avx"))) void gl_clip(const float *x, float *y, long n, float lo, float hi) {
	__m256 l = _mm256_set1_ps(lo), h = _mm256_set1_ps(hi);
	long i = 0;
	for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_min_ps(h, _mm256_max_ps(l, _mm256_loadu_ps(x + i))));
	for (; i < n; i++) {
		float v = x[i];
		v = v < lo ? lo : v;
		y[i] = v > hi ? hi : v;
	}
}

// gl_clip_grad sets dx = g where lo < x < hi strictly and 0 elsewhere (a NaN x passes nothing).
__attribute__((target("avx"))) void gl_clip_grad(const float *x, const float *g, float *dx, long n, float lo, float hi) {
	__m256 l = _mm256_set1_ps(lo), h = _mm256_set1_ps(hi);
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 v = _mm256_loadu_ps(x + i);
		__m256 m = _mm256_and_ps(_mm256_cmp_ps(v, l, _CMP_GT_OQ), _mm256_cmp_ps(v, h, _CMP_LT_OQ));
		_mm256_storeu_ps(dx + i, _mm256_and_ps(m, _mm256_loadu_ps(g + i)));
	}
	for (; i < n; i++) dx[i] = (x[i] > lo && x[i] < hi) ? g[i] : 0;
}
