package graph

import (
	"runtime"
	"sync"

	"github.com/grouploss/pipeline/internal/parallel"
)

// A packed, blocked matrix product C = alpha·A·B + beta·C on matrices given by offset tables.
//
// Convolutions over NCHW batches need products whose operands are not plain row-major matrices:
// a 1x1 convolution over a batch multiplies the weight (M×C) by the activations viewed as a
// C×(N·H·W) matrix whose column (n, p) lives at n·C·H·W + p. A view describes any matrix whose
// element (i, j) is at d[ro[i]+co[j]], so one product covers the whole batch. Operands are
// packed into 6-row and 16-column panels (zero-padded) and multiplied by a 6×16 micro-kernel:
// AVX2/FMA assembly for float32 on amd64 processors that have it, portable Go otherwise; on
// AVX-512 processors full tiles of C take two row panels at once (12×16, one zmm per row), with
// the same sums bit for bit.

const (
	mr    = 6   // micro-kernel rows
	nr    = 16  // micro-kernel columns
	kcMax = 256 // depth of a packed block
	// kcORT is the depth of a packed block for forward passes (gemmORT). Each block's sums are
	// added to C in turn, so the depth fixes the summation order: 128 is that of onnxruntime's
	// MLAS on AVX2, which makes the 1x1 Convs of a decoded MobileNetV2 round exactly as
	// onnxruntime's (TestMobileNetTail). Backward passes keep the deeper blocks (fewer passes
	// over C: about 15% of a tail step's CPU time).
	kcORT = 128
	mcMax = 144 // rows of A packed per job (a multiple of mr)
)

// view is a matrix of len(ro) rows and len(co) columns: element (i, j) is d[ro[i]+co[j]].
type view[T float] struct {
	d      []T
	ro, co []int
}

func seq(n, stride int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i * stride
	}
	return s
}

// dense returns the row-major rows×cols matrix at d[off:] with leading dimension ld.
func dense[T float](d []T, off, rows, cols, ld int) view[T] {
	ro := seq(rows, ld)
	for i := range ro {
		ro[i] += off
	}
	return view[T]{d: d, ro: ro, co: seq(cols, 1)}
}

// t returns the transpose of v (no copy).
func (v view[T]) t() view[T] { return view[T]{d: v.d, ro: v.co, co: v.ro} }

// batched returns offsets for an index (b, p), b < nb, p < np, at b·bs + p·ps, b-major.
func batched(nb, bs, np, ps int) []int {
	s := make([]int, 0, nb*np)
	for b := 0; b < nb; b++ {
		for p := 0; p < np; p++ {
			s = append(s, b*bs+p*ps)
		}
	}
	return s
}

// panelBatched returns the offsets of batched(nb, bs, np, ps) in another order, for the columns
// of a product: each sample's first np − np%nr positions, then the np%nr last positions of every
// sample. An nr-column panel of C whose columns are not consecutive in memory takes its sums
// through the accumulator and a Go loop instead of in place; in batched's order a third of the
// panels of 7×7 planes (49 = 3·16 + 1 positions) straddle two samples, in this order only the
// last few panels do. Columns are independent in a product, so C is the same bit for bit as long
// as B's columns and C's are in the same order.
func panelBatched(nb, bs, np, ps int) []int {
	full := np - np%nr
	s := make([]int, 0, nb*np)
	for b := 0; b < nb; b++ {
		for p := 0; p < full; p++ {
			s = append(s, b*bs+p*ps)
		}
	}
	for b := 0; b < nb; b++ {
		for p := full; p < np; p++ {
			s = append(s, b*bs+p*ps)
		}
	}
	return s
}

func shift(s []int, off int) []int {
	r := make([]int, len(s))
	for i, v := range s {
		r[i] = v + off
	}
	return r
}

type microKernel[T float] func(kb int, ap, bp []T, acc *[mr * nr]T)

func kernelGo[T float](kb int, ap, bp []T, acc *[mr * nr]T) {
	var c [mr * nr]T
	for p := 0; p < kb; p++ {
		a := ap[p*mr : p*mr+mr]
		b := bp[p*nr : p*nr+nr]
		for i := 0; i < mr; i++ {
			ai := a[i]
			row := c[i*nr : i*nr+nr]
			for j, bj := range b {
				row[j] += ai * bj
			}
		}
	}
	*acc = c
}

func pickKernel[T float]() microKernel[T] {
	var z T
	if _, ok := any(z).(float32); ok && useAsm {
		f := microKernel[float32](func(kb int, ap, bp []float32, acc *[mr * nr]float32) {
			if kb > 0 {
				sgemmKernel6x16(kb, &ap[0], &bp[0], &acc[0])
			} else {
				*acc = [mr * nr]float32{}
			}
		})
		return any(f).(microKernel[T])
	}
	return kernelGo[T]
}

// addKernel adds the micro-kernel's 6×16 product to the rows of 16 values at c[0:], c[ldc:], ...,
// c[5·ldc:] in place, without the accumulator round trip: the assembly kernel for float32 on
// amd64 with AVX2 and FMA, nil elsewhere. Each value of C is added once, c + Σ, as the
// accumulator path adds it, so the results are the same bit for bit.
type addKernel[T float] func(kb int, ap, bp, c []T, ldc int)

func pickAddKernel[T float]() addKernel[T] {
	var z T
	if _, ok := any(z).(float32); ok && useAsm && useAsmPaths {
		f := addKernel[float32](func(kb int, ap, bp, c []float32, ldc int) {
			_ = c[5*ldc+nr-1]
			sgemmKernel6x16Add(kb, &ap[0], &bp[0], &c[0], ldc)
		})
		return any(f).(addKernel[T])
	}
	return nil
}

// addKernel2 is addKernel on 2·mr rows: two consecutive packed panels of A (ap holds both) into
// rows c[0:], c[ldc:], ..., c[11·ldc:], the same sums bit for bit. The AVX-512 assembly kernel for
// float32 on amd64 processors with AVX-512F, nil elsewhere.
type addKernel2[T float] func(kb int, ap, bp, c []T, ldc int)

func pickAddKernel2[T float]() addKernel2[T] {
	var z T
	if _, ok := any(z).(float32); ok && useAVX512 && useAsmPaths {
		f := addKernel2[float32](func(kb int, ap, bp, c []float32, ldc int) {
			_ = c[(2*mr-1)*ldc+nr-1]
			_ = ap[2*mr*kb-1]
			sgemmKernel12x16AddZ(kb, &ap[0], &ap[mr*kb], &bp[0], &c[0], ldc)
		})
		return any(f).(addKernel2[T])
	}
	return nil
}

// pickPack16 returns the assembly packing of a B panel whose 16 columns are consecutive in
// memory (dst[16p+j] = src[ro[p]+off+j]) for float32 on amd64 with AVX2, nil elsewhere; the
// caller checks that every row's 16 values lie inside src.
func pickPack16[T float]() func(dst, src []T, ro []int, off int) {
	var z T
	if _, ok := any(z).(float32); ok && useAsm && useAsmPaths {
		f := func(dst, src []float32, ro []int, off int) {
			_ = dst[len(ro)*nr-1]
			packPanel16(&dst[0], &src[0], &ro[0], len(ro), off)
		}
		return any(f).(func(dst, src []T, ro []int, off int))
	}
	return nil
}

// minMax returns the smallest and the largest of s (not empty).
func minMax(s []int) (lo, hi int) {
	lo, hi = s[0], s[0]
	for _, v := range s[1:] {
		lo, hi = min(lo, v), max(hi, v)
	}
	return lo, hi
}

// useAsmPaths lets tests compare the assembly's in-place products and packing with the Go paths.
var useAsmPaths = true

// evenRows returns the stride of row offsets ro when they are equally spaced by at least nr.
func evenRows(ro []int) (int, bool) {
	ld := ro[1] - ro[0]
	if ld < nr {
		return 0, false
	}
	for i := 2; i < len(ro); i++ {
		if ro[i]-ro[i-1] != ld {
			return 0, false
		}
	}
	return ld, true
}

// Packing buffers and im2col matrices are recycled through sync.Pools (fresh large buffers cost
// page faults on every call). Their contents are not zeroed.
var scratch32, scratch64 sync.Pool

func scratchPool[T float]() *sync.Pool {
	var z T
	if _, ok := any(z).(float32); ok {
		return &scratch32
	}
	return &scratch64
}

func getScratch[T float](n int) *[]T {
	if v := scratchPool[T]().Get(); v != nil {
		if s := v.(*[]T); cap(*s) >= n {
			*s = (*s)[:n]
			return s
		}
	}
	s := make([]T, n)
	return &s
}

func putScratch[T float](s *[]T) { scratchPool[T]().Put(s) }

// gemm computes c = alpha·a·b + beta·c. a is m×k, b is k×n, c is m×n; c must not overlap a or
// b. It panics on mismatched dimensions (a programmer bug).
func gemm[T float](alpha T, a, b view[T], beta T, c view[T]) { gemmDepth(kcMax, alpha, a, b, beta, c) }

// gemmORT is gemm summing in onnxruntime's order (see kcORT), for forward passes.
func gemmORT[T float](alpha T, a, b view[T], beta T, c view[T]) {
	gemmDepth(kcORT, alpha, a, b, beta, c)
}

// gemmDepth is gemm with packed blocks of depth kc <= kcMax.
func gemmDepth[T float](kc int, alpha T, a, b view[T], beta T, c view[T]) {
	m, k, n := len(a.ro), len(a.co), len(b.co)
	if len(b.ro) != k || len(c.ro) != m || len(c.co) != n {
		panic("graph: gemm dimension mismatch")
	}
	if beta != 1 {
		runs := consecutiveRuns(c.co)
		parallel.Range(len(c.ro), len(c.ro)*len(c.co), func(lo, hi int) { // over rows
			for _, r := range c.ro[lo:hi] {
				for _, sp := range runs {
					row := c.d[r+c.co[sp.j] : r+c.co[sp.j]+sp.n]
					if beta == 0 {
						clear(row)
						continue
					}
					for j := range row {
						row[j] *= beta
					}
				}
			}
		})
	}
	if m == 0 || n == 0 || k == 0 || alpha == 0 {
		return
	}
	kern, addKern, addKern2, pack16 := pickKernel[T](), pickAddKernel[T](), pickAddKernel2[T](), pickPack16[T]()
	workers := runtime.GOMAXPROCS(0)
	if m*n*k < parallel.MinWork {
		workers = 1
	}
	// Row chunks of at most mcMax rows, as many as a multiple of the workers and of equal size
	// (rounded to mr), so that no worker is left with one chunk more than the others: 960 rows
	// in 7 chunks of 144 kept one of 2 workers busy for a fourth of the time alone.
	chunks := roundUp((m+mcMax-1)/mcMax, workers)
	mc := roundUp((m+chunks-1)/chunks, mr)
	mChunks := (m + mc - 1) / mc
	nPanels := (n + nr - 1) / nr
	nParts := 1
	if mChunks < workers {
		nParts = min(workers, nPanels)
	}
	kb0 := min(kc, k)
	bpBuf := getScratch[T](nPanels * nr * kb0)
	defer putScratch(bpBuf)
	bp := *bpBuf
	bSpans, cSpans := panelSpans(b.co), panelSpans(c.co)
	for k0 := 0; k0 < k; k0 += kc {
		kb := min(kc, k-k0)
		// Pack b[k0:k0+kb, :] into column panels of nr, each kb×nr row-major, zero-padded.
		bRows := consecutiveRuns(b.ro[k0 : k0+kb])
		roLo, roHi := minMax(b.ro[k0 : k0+kb])
		parallel.For(nPanels, kb*n*4, func(jp int) {
			dst := bp[jp*nr*kb : (jp+1)*nr*kb]
			j0 := jp * nr
			jn := min(nr, n-j0)
			co := b.co[j0 : j0+jn]
			if pack16 != nil && jn == nr && len(bSpans[jp]) == 1 && roLo+co[0] >= 0 && roHi+co[0]+nr <= len(b.d) {
				pack16(dst, b.d, b.ro[k0:k0+kb], co[0]) // 16 consecutive values per row
				return
			}
			if len(bSpans[jp]) == jn && jn > 1 && 4*len(bRows) <= kb {
				// No two columns adjacent but rows mostly are (a transposed batch, as the
				// weight gradient's Xᵀ): read each column down its runs of rows.
				for j, cj := range co {
					for _, rr := range bRows {
						o := b.ro[k0+rr.j] + cj
						for t, v := range b.d[o : o+rr.n] {
							dst[(rr.j+t)*nr+j] = v
						}
					}
				}
				for p := 0; p < kb && jn < nr; p++ {
					clear(dst[p*nr+jn : p*nr+nr])
				}
				return
			}
			for p := 0; p < kb; p++ {
				r := b.ro[k0+p]
				row := dst[p*nr : p*nr+nr]
				for _, sp := range bSpans[jp] {
					o := r + co[sp.j]
					copy(row[sp.j:sp.j+sp.n], b.d[o:o+sp.n])
				}
				for j := jn; j < nr; j++ {
					row[j] = 0
				}
			}
		})
		aRuns := consecutiveRuns(a.co[k0 : k0+kb])
		parallel.For(mChunks*nParts, m*n*kb, func(job int) {
			mi, ni := job/nParts, job%nParts
			i0 := mi * mc
			i1 := min(m, i0+mc)
			jp0, jp1 := ni*nPanels/nParts, (ni+1)*nPanels/nParts
			rows := i1 - i0
			aPanels := (rows + mr - 1) / mr
			apBuf := getScratch[T](aPanels * mr * kb)
			defer putScratch(apBuf)
			ap := *apBuf
			for ip := 0; ip < aPanels; ip++ {
				dst := ap[ip*mr*kb : (ip+1)*mr*kb]
				ib := i0 + ip*mr
				in := min(mr, i1-ib)
				if in == mr && contiguous(a.ro[ib:ib+mr]) {
					// rows contiguous (a transposed matrix): mr consecutive values per depth step
					r := a.ro[ib]
					for p := 0; p < kb; p++ {
						o := r + a.co[k0+p]
						src, q := a.d[o:o+mr:o+mr], dst[p*mr:p*mr+mr:p*mr+mr]
						q[0], q[1], q[2], q[3], q[4], q[5] = src[0], src[1], src[2], src[3], src[4], src[5]
					}
					continue
				}
				if in == mr {
					// mr rows read side by side down their runs of consecutive columns, so that
					// the panel is written in order
					for _, ar := range aRuns {
						o := a.co[k0+ar.j]
						r0 := a.d[a.ro[ib]+o : a.ro[ib]+o+ar.n]
						r1 := a.d[a.ro[ib+1]+o:][:len(r0)]
						r2 := a.d[a.ro[ib+2]+o:][:len(r0)]
						r3 := a.d[a.ro[ib+3]+o:][:len(r0)]
						r4 := a.d[a.ro[ib+4]+o:][:len(r0)]
						r5 := a.d[a.ro[ib+5]+o:][:len(r0)]
						d := dst[ar.j*mr : (ar.j+len(r0))*mr]
						for t := range r0 {
							q := d[t*mr : t*mr+mr : t*mr+mr]
							q[0], q[1], q[2], q[3], q[4], q[5] = r0[t], r1[t], r2[t], r3[t], r4[t], r5[t]
						}
					}
					continue
				}
				for i := 0; i < in; i++ {
					r := a.ro[ib+i]
					for _, ar := range aRuns { // a row read in runs of consecutive columns
						o := r + a.co[k0+ar.j]
						for t, v := range a.d[o : o+ar.n] {
							dst[(ar.j+t)*mr+i] = v
						}
					}
				}
				for i := in; i < mr; i++ {
					for p := 0; p < kb; p++ {
						dst[p*mr+i] = 0
					}
				}
			}
			var acc [mr * nr]T
			for jp := jp0; jp < jp1; jp++ {
				bpan := bp[jp*nr*kb : (jp+1)*nr*kb]
				j0 := jp * nr
				jn := min(nr, n-j0)
				co := c.co[j0 : j0+jn]
				// A full tile of C whose 16 columns are consecutive takes the product in place.
				direct := addKern != nil && alpha == 1 && jn == nr && len(cSpans[jp]) == 1
				for ip := 0; ip < aPanels; ip++ {
					ib := i0 + ip*mr
					in := min(mr, i1-ib)
					if direct && addKern2 != nil && i1-ib >= 2*mr { // two full row panels left
						if ldc, ok := evenRows(c.ro[ib : ib+2*mr]); ok {
							addKern2(kb, ap[ip*mr*kb:(ip+2)*mr*kb], bpan, c.d[c.ro[ib]+co[0]:], ldc)
							ip++
							continue
						}
					}
					if direct && in == mr {
						if ldc, ok := evenRows(c.ro[ib : ib+mr]); ok {
							addKern(kb, ap[ip*mr*kb:(ip+1)*mr*kb], bpan, c.d[c.ro[ib]+co[0]:], ldc)
							continue
						}
					}
					kern(kb, ap[ip*mr*kb:(ip+1)*mr*kb], bpan, &acc)
					for i := 0; i < in; i++ {
						r := c.ro[ib+i]
						arow := acc[i*nr : i*nr+jn]
						if alpha == 1 {
							for _, sp := range cSpans[jp] {
								o := r + co[sp.j]
								crow := c.d[o : o+sp.n]
								for j, v := range arow[sp.j : sp.j+sp.n] {
									crow[j] += v
								}
							}
						} else {
							for j, o := range co {
								c.d[r+o] += alpha * arow[j]
							}
						}
					}
				}
			}
		})
	}
}

// contiguous reports whether offsets s are consecutive integers.
func contiguous(s []int) bool {
	for i := 1; i < len(s); i++ {
		if s[i] != s[i-1]+1 {
			return false
		}
	}
	return true
}

// span is a run of n consecutive offsets starting at index j (relative to its panel).
type span struct{ j, n int }

// consecutiveRuns splits the offsets co into maximal runs of consecutive offsets.
func consecutiveRuns(co []int) []span {
	var r []span
	start := 0
	for j := 1; j <= len(co); j++ {
		if j == len(co) || co[j] != co[j-1]+1 {
			r = append(r, span{start, j - start})
			start = j
		}
	}
	return r
}

// panelSpans splits each nr-wide panel of the offsets co into maximal runs of consecutive
// offsets (one run for a contiguous panel; a panel straddling two samples of a batched view
// has two).
func panelSpans(co []int) [][]span {
	r := make([][]span, (len(co)+nr-1)/nr)
	for jp := range r {
		r[jp] = consecutiveRuns(co[jp*nr : min(len(co), (jp+1)*nr)])
	}
	return r
}

func roundUp(x, m int) int {
	if x < m {
		return m
	}
	return (x + m - 1) / m * m
}
