//go:build cgo && amd64

#include <stdlib.h>
#include "matmul.h"

#define MR 6    // rows of the micro-kernel
#define KC 256  // depth of a packed block: a B micro-panel of NR×KC floats stays in L1
#define MB 192  // rows of A packed at once: MB×KC floats (192 KiB) stay in L2

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,fma")
#define VW 16
#define SUFFIX avx512
#include "kernel.h"
#undef VW
#undef SUFFIX
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define VW 8
#define SUFFIX avx2
#include "kernel.h"
#undef VW
#undef SUFFIX
#pragma GCC pop_options

#define VW 4
#define SUFFIX sse2
#include "kernel.h"
#undef VW
#undef SUFFIX

int gl_matmul_isa(void) {
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return GL_ISA_AVX512;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GL_ISA_AVX2;
	return GL_ISA_SSE2;
}

int gl_abt(int isa, float *c, long ldc, const float *a, long m, const float *b, long n, long k) {
	// Packing buffers sized for the widest kernel (NR = 32), 64-byte aligned.
	float *apack = aligned_alloc(64, sizeof(float) * (MB + MR) * KC);
	float *bpack = aligned_alloc(64, sizeof(float) * 32 * KC);
	if (!apack || !bpack) {
		free(apack);
		free(bpack);
		return -1;
	}
	switch (isa) {
	case GL_ISA_AVX512: gl_abt_avx512(c, ldc, a, m, b, n, k, apack, bpack); break;
	case GL_ISA_AVX2: gl_abt_avx2(c, ldc, a, m, b, n, k, apack, bpack); break;
	default: gl_abt_sse2(c, ldc, a, m, b, n, k, apack, bpack); break;
	}
	free(apack);
	free(bpack);
	return 0;
}
