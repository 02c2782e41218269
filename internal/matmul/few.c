//go:build cgo && amd64

#include <immintrin.h>
#include "few.h"

// gl_few computes C = A·Bᵀ for an m×k A with m <= 8 and an n×k B, row-major, C with leading
// dimension ldc: each row of B is read once and multiplied by all rows of A (kept in L1), m
// accumulators of 8 floats, then a horizontal sum. A blocked sgemm packs all of B for such a
// product, which costs more than the product itself.
static inline __attribute__((always_inline, target("avx2,fma"))) void few(
		float *c, long ldc, const float *a, const int m, const float *b, long n, long k) {
	for (long j = 0; j < n; j++) {
		const float *bj = b + j * k;
		__m256 acc[8];
		for (int r = 0; r < m; r++) acc[r] = _mm256_setzero_ps();
		long p = 0;
		for (; p + 8 <= k; p += 8) {
			__m256 bv = _mm256_loadu_ps(bj + p);
			for (int r = 0; r < m; r++) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(a + r * k + p), bv, acc[r]);
		}
		for (int r = 0; r < m; r++) {
			__m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps(acc[r], 1));
			h = _mm_add_ps(h, _mm_movehl_ps(h, h));
			h = _mm_add_ss(h, _mm_movehdup_ps(h));
			float s = _mm_cvtss_f32(h);
			for (long q = p; q < k; q++) s += a[r * k + q] * bj[q];
			c[r * ldc + j] = s;
		}
	}
}

__attribute__((target("avx2,fma"))) static void few_avx2(float *c, long ldc, const float *a, int m, const float *b, long n, long k) {
	// One instance per m, so that the accumulators stay in registers.
	switch (m) {
	case 1: few(c, ldc, a, 1, b, n, k); break;
	case 2: few(c, ldc, a, 2, b, n, k); break;
	case 3: few(c, ldc, a, 3, b, n, k); break;
	case 4: few(c, ldc, a, 4, b, n, k); break;
	case 5: few(c, ldc, a, 5, b, n, k); break;
	case 6: few(c, ldc, a, 6, b, n, k); break;
	case 7: few(c, ldc, a, 7, b, n, k); break;
	default: few(c, ldc, a, 8, b, n, k); break;
	}
}

int gl_few_supported(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

void gl_few(float *c, long ldc, const float *a, int m, const float *b, long n, long k) { few_avx2(c, ldc, a, m, b, n, k); }
