// The body of the blocked float32 product C = A·Bᵀ, included by matmul.c once per instruction
// set with VW (floats per vector) and SUFFIX defined and the matching target pragma in force:
// the same source, compiled for AVX-512, AVX2+FMA and baseline SSE2.
//
// A is m×k, B is n×k, both row-major with leading dimension k; C is m×n with leading dimension
// ldc. Blocks of A (MB rows × KC) are packed in MR-row panels (L2), micro-panels of B (NR rows ×
// KC) in NR-column panels (L1), and an MR×NR micro-kernel keeps its tile of C in 2·MR vector
// registers, one fused multiply-add per vector and depth step.

#define GL_CAT2(a, b) a##_##b
#define GL_CAT(a, b) GL_CAT2(a, b)
#define GL_FN(name) GL_CAT(name, SUFFIX)
#define GL_V GL_CAT(gl_vec, SUFFIX)
#define NR (2 * VW)

typedef float GL_V __attribute__((vector_size(VW * 4), aligned(4)));

// micro multiplies the packed MR×kc panel ap by the packed kc×NR panel bp into the mr×nr tile at
// c (mr <= MR, nr <= NR), storing it (acc == 0) or adding it to what is there (acc != 0).
static inline void GL_FN(micro)(int kc, const float *restrict ap, const float *restrict bp,
		float *restrict c, long ldc, int mr, int nr, int acc) {
	GL_V s[MR][2];
	for (int r = 0; r < MR; r++) s[r][0] = s[r][1] = (GL_V){0};
	for (int p = 0; p < kc; p++) {
		GL_V b0 = *(const GL_V *)(bp + p * NR), b1 = *(const GL_V *)(bp + p * NR + VW);
		for (int r = 0; r < MR; r++) {
			float a = ap[p * MR + r];
			s[r][0] += b0 * a;
			s[r][1] += b1 * a;
		}
	}
	if (mr == MR && nr == NR) {
		for (int r = 0; r < MR; r++) {
			GL_V *c0 = (GL_V *)(c + r * ldc), *c1 = (GL_V *)(c + r * ldc + VW);
			if (acc) {
				*c0 += s[r][0];
				*c1 += s[r][1];
			} else {
				*c0 = s[r][0];
				*c1 = s[r][1];
			}
		}
		return;
	}
	float t[MR][NR];
	for (int r = 0; r < MR; r++) {
		*(GL_V *)&t[r][0] = s[r][0];
		*(GL_V *)&t[r][VW] = s[r][1];
	}
	for (int r = 0; r < mr; r++)
		for (int j = 0; j < nr; j++) c[r * ldc + j] = acc ? c[r * ldc + j] + t[r][j] : t[r][j];
}

static void GL_FN(gl_abt)(float *c, long ldc, const float *a, long m, const float *b, long n, long k,
		float *apack, float *bpack) {
	for (long p0 = 0; p0 < k; p0 += KC) {
		int kc = (int)(k - p0 < KC ? k - p0 : KC);
		for (long i0 = 0; i0 < m; i0 += MB) {
			long mb = m - i0 < MB ? m - i0 : MB;
			// Pack A[i0:i0+mb, p0:p0+kc] as MR-row panels, depth-major, zero-padded.
			for (long ip = 0; ip < mb; ip += MR) {
				float *dst = apack + ip * kc;
				for (int r = 0; r < MR; r++) {
					if (ip + r < mb) {
						const float *src = a + (i0 + ip + r) * k + p0;
						for (int p = 0; p < kc; p++) dst[p * MR + r] = src[p];
					} else {
						for (int p = 0; p < kc; p++) dst[p * MR + r] = 0;
					}
				}
			}
			for (long j0 = 0; j0 < n; j0 += NR) {
				int nr = (int)(n - j0 < NR ? n - j0 : NR);
				for (int j = 0; j < NR; j++) {
					if (j < nr) {
						const float *src = b + (j0 + j) * k + p0;
						for (int p = 0; p < kc; p++) bpack[p * NR + j] = src[p];
					} else {
						for (int p = 0; p < kc; p++) bpack[p * NR + j] = 0;
					}
				}
				for (long ip = 0; ip < mb; ip += MR) {
					int mr = (int)(mb - ip < MR ? mb - ip : MR);
					GL_FN(micro)(kc, apack + ip * kc, bpack, c + (i0 + ip) * ldc + j0, ldc, mr, nr, p0 > 0);
				}
			}
		}
	}
}

#undef NR
