//go:build cgo && !nolibjpeg

package data

/*
#cgo CFLAGS: -O3
#cgo LDFLAGS: -ljpeg
#pragma GCC optimize("fp-contract=off")
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>

// Decoding with libjpeg(-turbo), the library PIL uses: the same IDCT (islow), the same "fancy"
// chroma upsampling and colour tables, at SIMD speed.

typedef struct {
	struct jpeg_error_mgr pub;
	jmp_buf jump;
	int warned;
} gl_error;

static void gl_error_exit(j_common_ptr c) { longjmp(((gl_error *)c->err)->jump, 1); }

// Warnings (level < 0) are corrupt or truncated data that libjpeg papers over; they send the file
// to image/jpeg, which decides. Trace messages (level >= 0) are ignored.
static void gl_emit_message(j_common_ptr c, int level) {
	if (level < 0) ((gl_error *)c->err)->warned = 1;
}

enum { GL_OK, GL_SMALL, GL_TOO_LARGE, GL_UNSUPPORTED, GL_FAILED };

static int gl_turbo_version(void) {
#ifdef LIBJPEG_TURBO_VERSION_NUMBER
	return LIBJPEG_TURBO_VERSION_NUMBER;
#else
	return 0;
#endif
}

// gl_jpeg_decode decodes buf into out as packed 8-bit RGB rows. It sets *w, *h from the header and
// returns GL_SMALL when out holds fewer than w*h*3 bytes, GL_TOO_LARGE over max_pixels,
// GL_UNSUPPORTED for colour spaces other than grayscale, YCbCr and RGB (CMYK, YCCK), GL_FAILED on
// an error or warning.
static int gl_jpeg_decode(const unsigned char *buf, unsigned long len, unsigned char *out, size_t cap,
		long long max_pixels, int *w, int *h) {
	struct jpeg_decompress_struct c;
	gl_error e;
	c.err = jpeg_std_error(&e.pub);
	e.pub.error_exit = gl_error_exit;
	e.pub.emit_message = gl_emit_message;
	e.warned = 0;
	if (setjmp(e.jump)) {
		jpeg_destroy_decompress(&c);
		return GL_FAILED;
	}
	jpeg_create_decompress(&c);
	jpeg_mem_src(&c, buf, len);
	jpeg_read_header(&c, TRUE);
	*w = (int)c.image_width;
	*h = (int)c.image_height;
	int rc = GL_OK;
	if ((long long)c.image_width * (long long)c.image_height > max_pixels) rc = GL_TOO_LARGE;
	else if (c.jpeg_color_space != JCS_GRAYSCALE && c.jpeg_color_space != JCS_YCbCr && c.jpeg_color_space != JCS_RGB)
		rc = GL_UNSUPPORTED;
	else if ((size_t)c.image_width * c.image_height * 3 > cap) rc = GL_SMALL;
	if (rc != GL_OK) {
		jpeg_destroy_decompress(&c);
		return rc;
	}
	c.out_color_space = JCS_RGB;
	jpeg_start_decompress(&c);
	if (c.output_width != c.image_width || c.output_height != c.image_height || c.output_components != 3) {
		jpeg_destroy_decompress(&c);
		return GL_FAILED;
	}
	size_t stride = (size_t)c.output_width * 3;
	while (c.output_scanline < c.output_height) {
		JSAMPROW rows[16];
		int n = 0;
		for (; n < 16 && c.output_scanline + n < c.output_height; n++) rows[n] = out + (c.output_scanline + n) * stride;
		jpeg_read_scanlines(&c, rows, n);
		if (e.warned) break;
	}
	if (!e.warned) jpeg_finish_decompress(&c);
	jpeg_destroy_decompress(&c);
	return e.warned ? GL_FAILED : GL_OK;
}

// gl_hpass is the horizontal pass of one row with K taps per output (K >= every n[x]; the extra
// taps read the zero padding or carry zero weights and add +0).
#define GL_HPASS(K)                                                                                      \
	for (int x = 0; x < ow; x++) {                                                                   \
		const float *w = xw + (size_t)x * xstride, *p = acc + (size_t)xst[x] * 3;                \
		float r = p[0] * w[0], g = p[1] * w[0], b = p[2] * w[0];                                 \
		for (int k = 1; k < (K); k++) {                                                          \
			r += p[3 * k] * w[k];                                                            \
			g += p[3 * k + 1] * w[k];                                                        \
			b += p[3 * k + 2] * w[k];                                                        \
		}                                                                                        \
		R[x] = r * m0 + a0;                                                                      \
		G[x] = g * m1 + a1;                                                                      \
		B[x] = b * m2 + a2;                                                                      \
	}

// gl_vt_floats is L, the elements per row of an 8-row block of the AVX2 kernel: the packed source
// row and xmaxn zero pixels, rounded up to 8.
static size_t gl_vt_floats(int sw, int xmaxn) { return ((size_t)sw * 3 + 3 * (size_t)xmaxn + 7) & ~(size_t)7; }

// The AVX2 kernel (x86-64 with AVX2; gl_resample picks it at run time).
#if defined(__x86_64__)
#include <immintrin.h>
#define GL_MAXK 4
#define GL_TR8(r) do { \
	__m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]); \
	__m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]); \
	__m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]); \
	__m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]); \
	__m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xee); \
	__m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xee); \
	__m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xee); \
	__m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xee); \
	r[0] = _mm256_permute2f128_ps(s0, s4, 0x20); r[1] = _mm256_permute2f128_ps(s1, s5, 0x20); \
	r[2] = _mm256_permute2f128_ps(s2, s6, 0x20); r[3] = _mm256_permute2f128_ps(s3, s7, 0x20); \
	r[4] = _mm256_permute2f128_ps(s0, s4, 0x31); r[5] = _mm256_permute2f128_ps(s1, s5, 0x31); \
	r[6] = _mm256_permute2f128_ps(s2, s6, 0x31); r[7] = _mm256_permute2f128_ps(s3, s7, 0x31); \
} while (0)

// gl_resample8 does 8 output rows y..y+7 at once: the vertical pass of each row 8 source elements
// at a time, transposed in registers into vt (element i of the 8 rows at vt[i*8..i*8+7]), the
// horizontal pass on those 8-row vectors into ht, transposed back into the channel planes.
// vt holds gl_vt_floats(sw, xmaxn)*8 floats; ht 3*ow*8 floats (ow rounded up to 8).
__attribute__((target("avx2")))
static void gl_resample8(const uint8_t *rgb, int sw, const int32_t *xst, const float *xw, int xstride, int xmaxn,
		const int32_t *yst, const int32_t *yn, const float *yw, int ystride, int ow, int y,
		float *vt, float *ht, const float *mul, const float *add, const int32_t *dstc, float *dst) {
	size_t rl = (size_t)sw * 3, L = gl_vt_floats(sw, xmaxn), full = rl >= 8 ? (rl - 8) / 8 * 8 + 8 : 0;
	// Taps past a row's n read its first source row with weight 0 and add +0.
	int K = 1;
	for (int j = 0; j < 8; j++) K = yn[y + j] > K ? yn[y + j] : K;
	const uint8_t *rp[8][GL_MAXK];
	__m256 wv[8][GL_MAXK];
	if (K > GL_MAXK) K = 0; // the generic loop below
	for (int j = 0; j < 8 && K; j++)
		for (int k = 0; k < K; k++) {
			int n = yn[y + j];
			rp[j][k] = rgb + (size_t)(yst[y + j] + (k < n ? k : 0)) * rl;
			wv[j][k] = _mm256_set1_ps(k < n ? yw[(size_t)(y + j) * ystride + k] : 0.0f);
		}
#define GL_LOAD8(p) _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p))))
#define GL_V8(KK)                                                                                         \
	for (; i < full; i += 8) {                                                                        \
		__m256 r[8];                                                                              \
		for (int j = 0; j < 8; j++) {                                                             \
			__m256 v = _mm256_mul_ps(GL_LOAD8(rp[j][0] + i), wv[j][0]);                       \
			for (int k = 1; k < (KK); k++) v = _mm256_add_ps(v, _mm256_mul_ps(GL_LOAD8(rp[j][k] + i), wv[j][k])); \
			r[j] = v;                                                                         \
		}                                                                                         \
		GL_TR8(r);                                                                                \
		for (int q = 0; q < 8; q++) _mm256_storeu_ps(vt + (i + q) * 8, r[q]);                     \
	}
	size_t i = 0;
	switch (K) {
	case 1: GL_V8(1) break;
	case 2: GL_V8(2) break;
	case 3: GL_V8(3) break;
	case 4: GL_V8(4) break;
	default: break;
	}
	for (; i < L; i += 8) { // the generic loop, the row's end and the zero padding
		float e[8][8];
		for (int j = 0; j < 8; j++) {
			const float *ws = yw + (size_t)(y + j) * ystride;
			const uint8_t *s = rgb + (size_t)yst[y + j] * rl + i;
			int n = yn[y + j];
			for (int q = 0; q < 8; q++) {
				float a = 0;
				if (i + q < rl) {
					a = (float)s[q] * ws[0];
					for (int k = 1; k < n; k++) a += (float)s[(size_t)k * rl + q] * ws[k];
				}
				e[q][j] = a;
			}
		}
		for (int q = 0; q < 8; q++) memcpy(vt + (i + q) * 8, e[q], sizeof e[q]);
	}
	size_t owp = ((size_t)ow + 7) & ~(size_t)7;
	for (int c = 0; c < 3; c++) {
		__m256 m = _mm256_set1_ps(mul[c]), a = _mm256_set1_ps(add[c]);
		float *h = ht + (size_t)c * owp * 8;
		for (int x = 0; x < ow; x++) {
			const float *w = xw + (size_t)x * xstride, *p = vt + ((size_t)xst[x] * 3 + c) * 8;
			__m256 v = _mm256_mul_ps(_mm256_loadu_ps(p), _mm256_set1_ps(w[0]));
			for (int k = 1; k < xmaxn; k++) v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_loadu_ps(p + 24 * k), _mm256_set1_ps(w[k])));
			_mm256_storeu_ps(h + (size_t)x * 8, _mm256_add_ps(_mm256_mul_ps(v, m), a));
		}
		float *out = dst + dstc[c] + (size_t)y * ow;
		// The tensor is written once and read by the next batch's copy into onnxruntime: stream it past
		// the caches (no read for ownership) when every row start is 32-byte aligned.
		int stream = ((uintptr_t)out & 31) == 0 && ow % 8 == 0;
		int x = 0;
		for (; x + 8 <= ow; x += 8) {
			__m256 r[8];
			for (int q = 0; q < 8; q++) r[q] = _mm256_loadu_ps(h + (size_t)(x + q) * 8);
			GL_TR8(r);
			if (stream)
				for (int j = 0; j < 8; j++) _mm256_stream_ps(out + (size_t)j * ow + x, r[j]);
			else
				for (int j = 0; j < 8; j++) _mm256_storeu_ps(out + (size_t)j * ow + x, r[j]);
		}
		for (; x < ow; x++)
			for (int j = 0; j < 8; j++) out[(size_t)j * ow + x] = h[(size_t)x * 8 + j];
	}
}
#endif

// gl_resample_rows is resampleGo of resize.go in C: the same sums in the same order without fused
// multiply-adds (TestResampleMatchesGo holds the two to the bit), written for the compiler to
// vectorize the vertical pass and unroll the horizontal one. acc holds (sw+xmaxn)*3 floats, the
// last xmaxn*3 zero; xw has zero weights past n[x] up to xstride >= xmaxn.
__attribute__((target_clones("avx2", "default")))
static void gl_resample_rows(const uint8_t *rgb, int sw, const int32_t *xst, const float *xw, int xstride, int xmaxn,
		const int32_t *yst, const int32_t *yn, const float *yw, int ystride, int ow, int oh,
		float *acc, const float *mul, const float *add, const int32_t *dstc, float *dst) {
	size_t rl = (size_t)sw * 3;
	float m0 = mul[0], m1 = mul[1], m2 = mul[2], a0 = add[0], a1 = add[1], a2 = add[2];
	for (int y = 0; y < oh; y++) {
		const float *ws = yw + (size_t)y * ystride;
		const uint8_t *s0 = rgb + (size_t)yst[y] * rl;
		int n = yn[y];
		if (n == 2) {
			const uint8_t *s1 = s0 + rl;
			float w0 = ws[0], w1 = ws[1];
			for (size_t i = 0; i < rl; i++) acc[i] = (float)s0[i] * w0 + (float)s1[i] * w1;
		} else if (n == 3) {
			const uint8_t *s1 = s0 + rl, *s2 = s1 + rl;
			float w0 = ws[0], w1 = ws[1], w2 = ws[2];
			for (size_t i = 0; i < rl; i++) acc[i] = (float)s0[i] * w0 + (float)s1[i] * w1 + (float)s2[i] * w2;
		} else {
			float w0 = ws[0];
			for (size_t i = 0; i < rl; i++) acc[i] = (float)s0[i] * w0;
			for (int k = 1; k < n; k++) {
				const uint8_t *s = s0 + (size_t)k * rl;
				float w = ws[k];
				for (size_t i = 0; i < rl; i++) acc[i] += (float)s[i] * w;
			}
		}
		float *R = dst + dstc[0] + (size_t)y * ow, *G = dst + dstc[1] + (size_t)y * ow, *B = dst + dstc[2] + (size_t)y * ow;
		switch (xmaxn) {
		case 1: GL_HPASS(1) break;
		case 2: GL_HPASS(2) break;
		case 3: GL_HPASS(3) break;
		case 4: GL_HPASS(4) break;
		default: GL_HPASS(xmaxn) break;
		}
	}
}

// gl_simd is 1 when gl_resample may use the AVX2 kernel (tests turn it off to check the other).
static int gl_simd = 1;

static int gl_set_simd(int on) {
	int old = gl_simd;
	gl_simd = on;
	return old;
}

// gl_resample writes the oh output rows: 8 at a time with the AVX2 kernel when the CPU has AVX2,
// the remaining rows (or all) with gl_resample_rows. Both give the same floats as resampleGo.
// simd holds gl_simd_floats(sw, ow, xmaxn) floats.
static size_t gl_simd_floats(int sw, int ow, int xmaxn) {
	return (gl_vt_floats(sw, xmaxn) + 3 * (((size_t)ow + 7) & ~(size_t)7)) * 8;
}

static void gl_resample(const uint8_t *rgb, int sw, const int32_t *xst, const float *xw, int xstride, int xmaxn,
		const int32_t *yst, const int32_t *yn, const float *yw, int ystride, int ow, int oh,
		float *acc, float *simd, const float *mul, const float *add, const int32_t *dstc, float *dst) {
	int y = 0;
#if defined(__x86_64__)
	// (libgcc fills in the CPU model before main: no __builtin_cpu_init needed here)
	if (gl_simd && __builtin_cpu_supports("avx2")) {
		float *ht = simd + gl_vt_floats(sw, xmaxn) * 8;
		for (; y + 8 <= oh; y += 8)
			gl_resample8(rgb, sw, xst, xw, xstride, xmaxn, yst, yn, yw, ystride, ow, y, simd, ht, mul, add, dstc, dst);
		_mm_sfence(); // the streamed stores are visible before the Go side hands the tensor on
	}
#endif
	if (y < oh)
		gl_resample_rows(rgb, sw, xst, xw, xstride, xmaxn, yst + y, yn + y, yw + (size_t)y * ystride, ystride, ow, oh - y,
			acc, mul, add, dstc, dst + (size_t)y * ow);
}
*/
import "C"

import (
	"strconv"
	"unsafe"
)

// jpegDecoder names this build's JPEG decoder in Preprocess.Key: decoders differ in the last bit
// of some pixels, so features cached with one are not reused with the other.
var jpegDecoder = "libjpeg-turbo-" + strconv.Itoa(int(C.gl_turbo_version()))

// decodeJPEG decodes the JPEG file contents b with libjpeg-turbo into s.rgb (packed RGB) and
// returns its size. ok is false when b is not a JPEG, is over maxPixels, or is one libjpeg
// declines or warns about (CMYK, corrupt or truncated data): the caller then decodes it with
// image/jpeg, whose result or error stands.
func (s *scratch) decodeJPEG(b []byte, maxPixels int) (w, h int, ok bool) {
	if len(b) < 4 || b[0] != 0xff || b[1] != 0xd8 {
		return 0, 0, false
	}
	for range 2 {
		var out *C.uchar
		if cap(s.rgb) > 0 {
			s.rgb = s.rgb[:cap(s.rgb)]
			out = (*C.uchar)(unsafe.Pointer(&s.rgb[0]))
		}
		var cw, ch C.int
		rc := C.gl_jpeg_decode((*C.uchar)(unsafe.Pointer(&b[0])), C.ulong(len(b)), out, C.size_t(cap(s.rgb)),
			C.longlong(maxPixels), &cw, &ch)
		w, h = int(cw), int(ch)
		switch rc {
		case C.GL_OK:
			s.rgb = s.rgb[:w*h*3]
			return w, h, true
		case C.GL_SMALL:
			s.rgb = make([]uint8, w*h*3)
		default:
			return 0, 0, false
		}
	}
	return 0, 0, false
}

// resampleRGB runs the C copy of resampleGo.
func resampleRGB(s *scratch, sw, ow, oh int, nm *norm, dst []float32) {
	xs, ys := &s.xs, &s.ys
	s.simd = grow(s.simd, int(C.gl_simd_floats(C.int(sw), C.int(ow), C.int(xs.maxN))))
	C.gl_resample((*C.uint8_t)(unsafe.Pointer(&s.rgb[0])), C.int(sw),
		(*C.int32_t)(unsafe.Pointer(&xs.start[0])), (*C.float)(unsafe.Pointer(&xs.w[0])), C.int(xs.stride), C.int(xs.maxN),
		(*C.int32_t)(unsafe.Pointer(&ys.start[0])), (*C.int32_t)(unsafe.Pointer(&ys.n[0])), (*C.float)(unsafe.Pointer(&ys.w[0])),
		C.int(ys.stride), C.int(ow), C.int(oh), (*C.float)(unsafe.Pointer(&s.acc[0])), (*C.float)(unsafe.Pointer(&s.simd[0])),
		(*C.float)(unsafe.Pointer(&nm.mul[0])), (*C.float)(unsafe.Pointer(&nm.add[0])), (*C.int32_t)(unsafe.Pointer(&nm.dst[0])),
		(*C.float)(unsafe.Pointer(&dst[0])))
}

// setResampleSIMD allows (true) or forbids the AVX2 kernel, for tests; it returns the old setting.
func setResampleSIMD(on bool) bool {
	v := 0
	if on {
		v = 1
	}
	return C.gl_set_simd(C.int(v)) != 0
}
