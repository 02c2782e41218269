//go:build cgo && amd64

#include <immintrin.h>
#include "adam.h"

// gl_adam is adamStepGo's loop over 4 doubles at a time with AVX2 (sqrt and division included),
// for the first n - n%4 elements; the caller runs the rest in Go. The operations and their order
// are the Go loop's, and without the FMA target nothing is contracted, so both give the same bits
// (TestAdamKernelMatchesGo).
__attribute__((target("avx2"))) void gl_adam(double *restrict w, const double *restrict g, double *restrict m,
		double *restrict v, long n, double b1, double b2, double c1, double c2, double gdecay, double wscale, double step,
		double isb, double eps) {
	const __m256d B1 = _mm256_set1_pd(b1), B2 = _mm256_set1_pd(b2), C1 = _mm256_set1_pd(c1), C2 = _mm256_set1_pd(c2),
		      GD = _mm256_set1_pd(gdecay), WS = _mm256_set1_pd(wscale), ST = _mm256_set1_pd(step),
		      ISB = _mm256_set1_pd(isb), EPS = _mm256_set1_pd(eps);
	for (long i = 0; i + 4 <= n; i += 4) {
		__m256d wi = _mm256_mul_pd(_mm256_loadu_pd(w + i), WS);
		__m256d gi = _mm256_add_pd(_mm256_loadu_pd(g + i), _mm256_mul_pd(GD, wi));
		__m256d mi = _mm256_add_pd(_mm256_mul_pd(B1, _mm256_loadu_pd(m + i)), _mm256_mul_pd(C1, gi));
		__m256d vi = _mm256_add_pd(_mm256_mul_pd(B2, _mm256_loadu_pd(v + i)), _mm256_mul_pd(_mm256_mul_pd(C2, gi), gi));
		_mm256_storeu_pd(m + i, mi);
		_mm256_storeu_pd(v + i, vi);
		__m256d den = _mm256_add_pd(_mm256_mul_pd(_mm256_sqrt_pd(vi), ISB), EPS);
		_mm256_storeu_pd(w + i, _mm256_sub_pd(wi, _mm256_div_pd(_mm256_mul_pd(ST, mi), den)));
	}
}

int gl_adam_supported(void) { return __builtin_cpu_supports("avx2"); }
