package graph

import "unsafe"

// sgemmKernel6x16 computes acc (6×16, row-major) = Σ_p ap[p·6+i]·bp[p·16+j] over k ≥ 1 steps:
// the in-place kernel below on a zeroed accumulator.
func sgemmKernel6x16(k int, ap, bp, acc *float32) {
	*(*[mr * nr]float32)(unsafe.Pointer(acc)) = [mr * nr]float32{}
	sgemmKernel6x16Add(k, ap, bp, acc, nr)
}

// sgemmKernel6x16Add adds the product of sgemmKernel6x16 (k ≥ 1) to the 6 rows of 16 floats
// at c, c+ldc, ..., c+5·ldc.
//
//go:noescape
func sgemmKernel6x16Add(k int, ap, bp, c *float32, ldc int)

// sgemmKernel12x16AddZ is sgemmKernel6x16Add on two consecutive 6-row panels of A (ap0, ap1)
// at once, with AVX-512 (12 zmm accumulators instead of 12 ymm for 6 rows): the same sums bit
// for bit, about twice the multiply-adds per instruction.
//
//go:noescape
func sgemmKernel12x16AddZ(k int, ap0, ap1, bp, c *float32, ldc int)

// packPanel16 copies the 16 floats at src + ro[p] + off to dst + 16·p for p < kb (kb ≥ 1; the
// caller checks the bounds).
//
//go:noescape
func packPanel16(dst, src *float32, ro *int, kb, off int)

func cpuid(op, op2 uint32) (eax, ebx, ecx, edx uint32)
func xgetbv() (eax, edx uint32)

// useAsm reports whether the processor and OS support AVX2 and FMA (ymm state enabled);
// useAVX512 whether they also support AVX-512F (zmm and opmask state enabled).
var (
	useAsm    = hasAVX2FMA()
	useAVX512 = useAsm && hasAVX512F()
)

func hasAVX512F() bool {
	// XCR0 bits 1-2 (SSE, AVX) and 5-7 (opmask, upper halves of zmm0-15, zmm16-31)
	if xcr0, _ := xgetbv(); xcr0&0xe6 != 0xe6 {
		return false
	}
	_, ebx7, _, _ := cpuid(7, 0)
	return ebx7&(1<<16) != 0
}

func hasAVX2FMA() bool {
	maxID, _, _, _ := cpuid(0, 0)
	if maxID < 7 {
		return false
	}
	_, _, ecx1, _ := cpuid(1, 0)
	const fma, osxsave, avx = 1 << 12, 1 << 27, 1 << 28
	if ecx1&fma == 0 || ecx1&osxsave == 0 || ecx1&avx == 0 {
		return false
	}
	if xcr0, _ := xgetbv(); xcr0&6 != 6 {
		return false
	}
	_, ebx7, _, _ := cpuid(7, 0)
	return ebx7&(1<<5) != 0
}
