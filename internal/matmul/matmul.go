// Package matmul computes the float32 matrix product C = A·Bᵀ of row-major matrices, the one
// product behind exact nearest-neighbour search, k-means and gallery search: rows of A and B are
// vectors, C holds their dot products.
//
// The product is OpenBLAS's sgemm through cgo (Debian's libopenblas, which picks its kernel for
// the CPU at run time: AVX-512 on Skylake-X and later, AVX2+FMA on Haswell and Zen), on one thread
// per call; ParallelABt splits the columns among goroutines. Products of at most 8 rows of A by
// many rows of B run a small AVX2 kernel of our own (few.c) instead, on CPUs that have AVX2 and FMA.
// Builds tagged noopenblas, or without cgo, use a plain Go loop (about 24x slower: 0.63 against 15
// GFLOP/s on 256x8192x512, back to back at load 24).
//
// Summation order, and so the last bits of C, differ between kernels: callers that need exact
// decisions screen with C and recheck near ties in float64 (see ErrorBound).
package matmul

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

// fewRows is the most rows of A that fewABt takes: up to 8 vectors (k-means++ trials) against
// many rows, where a blocked sgemm spends more time packing B than multiplying (measured: 16
// GFLOP per CPU-second for OpenBLAS on 8x100000x512, against 60-75 on larger blocks).
const fewRows = 8

// flopsDone counts the floating-point operations of every product so far (FlopsDone).
var flopsDone atomic.Uint64

// ABt sets c[i*ldc+j] = Σ_p a[i*k+p]·b[j*k+p] for i < m, j < n: C = A·Bᵀ for the m×k matrix A and
// the n×k matrix B, row-major. It runs on the calling goroutine; see ParallelABt.
//
// ABt panics if a slice is too short or ldc < n (programmer errors).
func ABt(c []float32, ldc int, a []float32, m int, b []float32, n, k int) {
	if m == 0 || n == 0 {
		return
	}
	if m < 0 || n < 0 || k < 1 || ldc < n || len(a) < m*k || len(b) < n*k || len(c) < (m-1)*ldc+n {
		panic(fmt.Sprintf("matmul: ABt: bad arguments m=%d n=%d k=%d ldc=%d len(a)=%d len(b)=%d len(c)=%d",
			m, n, k, ldc, len(a), len(b), len(c)))
	}
	if m > fewRows || !fewABt(c, ldc, a, m, b, n, k) {
		abt(c, ldc, a, m, b, n, k)
	}
	flopsDone.Add(uint64(2 * m * n * k))
}

// FlopsDone returns the floating-point operations of all products this process has computed, so
// that a caller can rate a stage: (FlopsDone after - before) / seconds.
func FlopsDone() float64 { return float64(flopsDone.Load()) }

// ParallelABt is ABt with the columns of C (the rows of B) split among up to `workers`
// goroutines (0: GOMAXPROCS). Each element of C is computed as by ABt, so the result does not
// depend on workers up to rounding (within ErrorBound).
func ParallelABt(c []float32, ldc int, a []float32, m int, b []float32, n, k, workers int) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	// Below a few columns per worker the split costs more than it saves.
	workers = min(workers, max(n/64, 1))
	if workers <= 1 {
		ABt(c, ldc, a, m, b, n, k)
		return
	}
	var wg sync.WaitGroup
	per := (n + workers - 1) / workers
	for j0 := 0; j0 < n; j0 += per {
		nb := min(per, n-j0)
		wg.Go(func() { ABt(c[j0:], ldc, a, m, b[j0*k:], nb, k) })
	}
	wg.Wait()
}

// Flops is the number of floating-point operations of one ABt of these sizes (a multiply and an
// add per term), for rates in GFLOP/s.
func Flops(m, n, k int) float64 { return 2 * float64(m) * float64(n) * float64(k) }

// unitRoundoff is 2^-24, the unit roundoff of float32.
const unitRoundoff = 1.0 / (1 << 24)

// ErrorBound bounds |C_ij - a_i·b_j| for ABt of float32 rows converted from float64 vectors a_i, b_j
// (rounded to nearest) of dimension k, where a_i·b_j is the exact dot product of the float64
// vectors and ‖a_i‖ <= normA, ‖b_j‖ <= normB: the rounding of the inputs (2u per term) plus that of
// any summation order, with or without fused multiply-adds (γ_k = k·u/(1-k·u), Higham, "Accuracy
// and Stability of Numerical Algorithms", 3.1), times Σ|a_ip·b_jp| <= ‖a_i‖·‖b_j‖, plus the
// underflow of products and of inputs below float32's normal range (an absolute k·2^-148).
func ErrorBound(k int, normA, normB float64) float64 {
	u := unitRoundoff
	ku := float64(k) * u
	gamma := ku / (1 - ku)
	return (gamma+2*u+u*u)*(1+u)*(1+u)*normA*normB*(1+1e-6) + float64(k)*0x1p-148
}
