//go:build cgo && amd64

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include "depthwise.h"

// Depthwise convolutions with stride 1, 8 outputs of a row at a time. Each plane is first
// copied into a zero-padded buffer wide enough that every tap of every 8-output chunk is one
// unaligned load: no per-run bounds and no masked stores (slow on AMD's cores, and a masked
// store followed by an overlapping load stalls). A tap that falls in the padding adds
// w·0 = 0 exactly, so each output is the sum of its valid taps in (ki, kj) order with fused
// float32 multiply-adds from zero: the order and rounding of the Go kernel and of onnxruntime's
// depthwise kernel.
//
// Every function returns 0, or -1 when its scratch buffer cannot be allocated (having written
// nothing).

static long chunks(long n) { return (n + 7) / 8; }

// pad copies the rows×cols plane src into dst (prow rows of stride ps) at row r0, column c0;
// rows or columns that fall outside dst are dropped. The rest of dst must be zero: each kernel
// allocates its buffers zeroed and pads planes of one geometry into them, so the border stays
// zero. Rows of 4 to 8 values are two overlapping 4-lane moves inline (a libc call per 7-value
// row cost more than the copy; a masked 8-lane load was slower still on Zen 3).
static inline __attribute__((always_inline, target("avx2"))) void pad(float *dst, long prow, long ps, const float *src,
		long rows, long cols, long r0, long c0) {
	int whole = c0 >= 0 && c0 + cols <= ps;
	for (long r = 0; r < rows; r++) {
		long pr = r + r0;
		if (pr < 0 || pr >= prow) continue;
		float *d = dst + pr * ps + c0;
		const float *q = src + r * cols;
		if (whole && cols >= 4 && cols <= 8) {
			__m128 a = _mm_loadu_ps(q), b = _mm_loadu_ps(q + cols - 4);
			_mm_storeu_ps(d, a);
			_mm_storeu_ps(d + cols - 4, b);
			continue;
		}
		long lo = c0 < 0 ? -c0 : 0, hi = cols;
		if (c0 + hi > ps) hi = ps - c0;
		if (lo < hi) memcpy(d + lo, q + lo, (hi - lo) * sizeof(float));
	}
}

// store writes the first n (<= 8) lanes of v to p.
static inline __attribute__((always_inline, target("avx2"))) void store(float *p, __m256 v, long n) {
	if (n == 8) {
		_mm256_storeu_ps(p, v);
		return;
	}
	float t[8];
	_mm256_storeu_ps(t, v);
	memcpy(p, t, n * sizeof(float));
}

static inline __attribute__((always_inline, target("avx2"))) float hsum(__m256 v) {
	__m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	h = _mm_add_ps(h, _mm_movehl_ps(h, h));
	h = _mm_add_ss(h, _mm_movehdup_ps(h));
	return _mm_cvtss_f32(h);
}

// The padded input plane of forward and back_w: row oh + ki·dh, column c + kj·dw holds
// x(oh + ki·dh − pt, c + kj·dw − pl).
static long xrows(const gl_dw_shape *s) { return s->oh + (s->kh - 1) * s->dh; }
static long xstride(const gl_dw_shape *s) { return chunks(s->ow) * 8 + (s->kw - 1) * s->dw; }

__attribute__((target("avx2,fma"))) int gl_dw_forward(const float *x, const float *w, float *y, const gl_dw_shape *s,
		long o0, long o1) {
	long m = s->c * s->mult, hw = s->h * s->w, ohw = s->oh * s->ow, kk = s->kh * s->kw;
	long pr = xrows(s), ps = xstride(s), nc = chunks(s->ow);
	float *p = calloc(pr * ps, sizeof(float));
	if (!p) return -1;
	for (long o = o0; o < o1; o++) {
		const float *wk = w + o * kk;
		for (long i = 0; i < s->n; i++) {
			pad(p, pr, ps, x + (i * s->c + o / s->mult) * hw, s->h, s->w, s->pt, s->pl);
			float *ys = y + (i * m + o) * ohw;
			for (long oh = 0; oh < s->oh; oh++) {
				for (long ch = 0; ch < nc; ch++) {
					__m256 acc = _mm256_setzero_ps();
					for (long ki = 0; ki < s->kh; ki++) {
						const float *row = p + (oh + ki * s->dh) * ps + ch * 8;
						for (long kj = 0; kj < s->kw; kj++)
							acc = _mm256_fmadd_ps(_mm256_set1_ps(wk[ki * s->kw + kj]), _mm256_loadu_ps(row + kj * s->dw), acc);
					}
					long n = s->ow - ch * 8;
					store(ys + oh * s->ow + ch * 8, acc, n < 8 ? n : 8);
				}
			}
		}
	}
	free(p);
	return 0;
}

// back_x reads the output gradient through a padded plane whose row ih + pt + (kh−1−ki)·dh,
// column iw + pl + (kw−1−kj)·dw holds gy(ih + pt − ki·dh, iw + pl − kj·dw), the output that
// input (ih, iw) reaches under tap (ki, kj).
__attribute__((target("avx2,fma"))) int gl_dw_back_x(float *dx, const float *w, const float *gy, const gl_dw_shape *s,
		long c0, long c1) {
	long m = s->c * s->mult, hw = s->h * s->w, ohw = s->oh * s->ow, kk = s->kh * s->kw;
	long ry = (s->kh - 1) * s->dh, cy = (s->kw - 1) * s->dw;
	long pr = s->h + s->pt + ry, nc = chunks(s->w), ps = nc * 8 + s->pl + cy;
	float *p = calloc(pr * ps, sizeof(float));
	if (!p) return -1;
	for (long ci = c0; ci < c1; ci++) {
		for (long i = 0; i < s->n; i++) {
			float *xs = dx + (i * s->c + ci) * hw;
			for (long o = ci * s->mult; o < (ci + 1) * s->mult; o++) {
				const float *wk = w + o * kk;
				pad(p, pr, ps, gy + (i * m + o) * ohw, s->oh, s->ow, ry, cy);
				for (long ih = 0; ih < s->h; ih++) {
					for (long ch = 0; ch < nc; ch++) {
						__m256 acc = _mm256_setzero_ps();
						for (long ki = 0; ki < s->kh; ki++) {
							const float *row = p + (ih + s->pt + (s->kh - 1 - ki) * s->dh) * ps + ch * 8 + s->pl;
							for (long kj = 0; kj < s->kw; kj++)
								acc = _mm256_fmadd_ps(_mm256_set1_ps(wk[ki * s->kw + kj]),
										_mm256_loadu_ps(row + (s->kw - 1 - kj) * s->dw), acc);
						}
						long n = s->w - ch * 8;
						float *d = xs + ih * s->w + ch * 8;
						if (o > ci * s->mult) { // later output channels of the group add to the first's
							float t[8];
							memcpy(t, d, (n < 8 ? n : 8) * sizeof(float));
							acc = _mm256_add_ps(acc, _mm256_loadu_ps(t));
						}
						store(d, acc, n < 8 ? n : 8);
					}
				}
			}
		}
	}
	free(p);
	return 0;
}

// GL_DW_MAX_TAPS is the largest kernel (kh·kw) of back_w: one 8-lane sum per tap (Go's DepthwiseMaxTaps).
#define GL_DW_MAX_TAPS 49

__attribute__((target("avx2,fma"))) int gl_dw_back_w(const float *x, float *dw, const float *gy, const gl_dw_shape *s,
		long o0, long o1) {
	long m = s->c * s->mult, hw = s->h * s->w, ohw = s->oh * s->ow, kk = s->kh * s->kw;
	long pr = xrows(s), ps = xstride(s), nc = chunks(s->ow);
	if (kk > GL_DW_MAX_TAPS) return -1;
	float *p = calloc(pr * ps + s->oh * nc * 8, sizeof(float));
	if (!p) return -1;
	float *q = p + pr * ps; // the output gradient plane, rows padded with zeros to nc·8
	__m256 acc[GL_DW_MAX_TAPS];
	for (long o = o0; o < o1; o++) {
		for (long t = 0; t < kk; t++) acc[t] = _mm256_setzero_ps();
		for (long i = 0; i < s->n; i++) {
			pad(p, pr, ps, x + (i * s->c + o / s->mult) * hw, s->h, s->w, s->pt, s->pl);
			pad(q, s->oh, nc * 8, gy + (i * m + o) * ohw, s->oh, s->ow, 0, 0);
			for (long oh = 0; oh < s->oh; oh++) {
				for (long ch = 0; ch < nc; ch++) {
					__m256 g = _mm256_loadu_ps(q + oh * nc * 8 + ch * 8);
					for (long ki = 0; ki < s->kh; ki++) {
						const float *row = p + (oh + ki * s->dh) * ps + ch * 8;
						for (long kj = 0; kj < s->kw; kj++)
							acc[ki * s->kw + kj] = _mm256_fmadd_ps(g, _mm256_loadu_ps(row + kj * s->dw), acc[ki * s->kw + kj]);
					}
				}
			}
		}
		for (long t = 0; t < kk; t++) dw[o * kk + t] += hsum(acc[t]);
	}
	free(p);
	return 0;
}

int gl_dw_supported(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
