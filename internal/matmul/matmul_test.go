package matmul

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// TestABtWithinErrorBound compares the product of this build (OpenBLAS, or the Go loop with
// -tags noopenblas) with float64 dot products of the
// unrounded vectors, on sizes that exercise every edge of the blocking (partial micro-tiles, more
// than one depth block and row block, ldc > n), and checks that ErrorBound holds and that
// nothing beyond column n of C is written.
func TestABtWithinErrorBound(t *testing.T) {
	for _, sz := range [][3]int{{1, 1, 1}, {5, 7, 3}, {6, 16, 256}, {7, 33, 257}, {8, 300, 1000}, {9, 50, 64}, {200, 70, 600}, {13, 40, 1}} {
		m, n, k := sz[0], sz[1], sz[2]
		t.Run(fmt.Sprintf("%dx%dx%d", m, n, k), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(m), uint64(n*k)))
			a64, a := randRows(rng, m, k)
			b64, b := randRows(rng, n, k)
			ldc := n + 3
			c := make([]float32, m*ldc)
			for i := range c {
				c[i] = float32(math.NaN()) // every element must be written
			}
			ABt(c, ldc, a, m, b, n, k)
			t.Logf("worst error / bound = %.3g", checkProduct(t, c, ldc, a64, m, b64, n, k))
			for i := range m - 1 {
				for j := n; j < ldc; j++ {
					if !math.IsNaN(float64(c[i*ldc+j])) {
						t.Fatalf("c[%d][%d] beyond n written", i, j)
					}
				}
			}
		})
	}
}

// checkProduct fails t unless every c[i*ldc+j] is within ErrorBound of the float64 dot product of
// rows a64[i] and b64[j], and returns the largest ratio error / bound.
func checkProduct(t *testing.T, c []float32, ldc int, a64 []float64, m int, b64 []float64, n, k int) float64 {
	t.Helper()
	worst := 0.0
	for i := range m {
		for j := range n {
			want, na, nb := 0.0, 0.0, 0.0
			for p := range k {
				want += a64[i*k+p] * b64[j*k+p]
				na += a64[i*k+p] * a64[i*k+p]
				nb += b64[j*k+p] * b64[j*k+p]
			}
			bound := ErrorBound(k, math.Sqrt(na), math.Sqrt(nb))
			e := math.Abs(float64(c[i*ldc+j]) - want)
			if !(e <= bound) {
				t.Fatalf("c[%d][%d] = %v, want %v within %.3g", i, j, c[i*ldc+j], want, bound)
			}
			worst = max(worst, e/bound)
		}
	}
	return worst
}

// TestExactOnIntegers: small integers multiply and add exactly in float32 in any order, so the
// product is exact.
func TestExactOnIntegers(t *testing.T) {
	for _, m := range []int{5, 13} { // the small kernel and the blocked one
		const n, k = 37, 300
		rng := rand.New(rand.NewPCG(3, 4))
		a, b := make([]float32, m*k), make([]float32, n*k)
		for i := range a {
			a[i] = float32(rng.IntN(9) - 4)
		}
		for i := range b {
			b[i] = float32(rng.IntN(9) - 4)
		}
		c := make([]float32, m*n)
		ABt(c, n, a, m, b, n, k)
		for i := range m {
			for j := range n {
				var want float32
				for p := range k {
					want += a[i*k+p] * b[j*k+p]
				}
				if c[i*n+j] != want {
					t.Fatalf("m %d: c[%d][%d] = %v, want %v", m, i, j, c[i*n+j], want)
				}
			}
		}
	}
}

// TestParallelABt: splitting the columns among workers computes every element (within the bound;
// the kernel's rounding may depend on the split).
func TestParallelABt(t *testing.T) {
	const m, n, k = 9, 1000, 130
	rng := rand.New(rand.NewPCG(5, 6))
	a64, a := randRows(rng, m, k)
	b64, b := randRows(rng, n, k)
	for _, w := range []int{0, 1, 2, 3, 7} {
		c := make([]float32, m*n)
		ParallelABt(c, n, a, m, b, n, k, w)
		checkProduct(t, c, n, a64, m, b64, n, k)
	}
}

func TestABtPanicsOnShortSlices(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("ABt with a short slice did not panic")
		}
	}()
	ABt(make([]float32, 3), 2, make([]float32, 4), 2, make([]float32, 4), 2, 2)
}

// randRows returns n Gaussian rows of dimension k scaled to norms in [0.5, 2], as float64 and
// rounded to float32.
func randRows(rng *rand.Rand, n, k int) ([]float64, []float32) {
	x64 := make([]float64, n*k)
	x32 := make([]float32, n*k)
	for i := range x64 {
		x64[i] = rng.NormFloat64() / math.Sqrt(float64(k)) * (0.5 + 1.5*rng.Float64())
		x32[i] = float32(x64[i])
	}
	return x64, x32
}

// BenchmarkABt: the shapes of eval's neighbour blocks (256 queries against 8192 gallery rows)
// and of k-means (1000 centres), d = 512, on one goroutine and on all cores.
func BenchmarkABt(b *testing.B) {
	for _, sz := range [][3]int{{256, 8192, 512}, {8, 100000, 512}} {
		m, n, k := sz[0], sz[1], sz[2]
		rng := rand.New(rand.NewPCG(1, 2))
		_, a := randRows(rng, m, k)
		_, bb := randRows(rng, n, k)
		c := make([]float32, m*n)
		for _, w := range []int{1, 0} {
			b.Run(fmt.Sprintf("%s/%dx%dx%d/workers=%d", strings.ReplaceAll(Kernel(), "/", "-"), m, n, k, w), func(b *testing.B) {
				for b.Loop() {
					ParallelABt(c, n, a, m, bb, n, k, w)
				}
				b.ReportMetric(Flops(m, n, k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// TestBLASGemm: BLAS.Sgemm and Dgemm give gonum's products (within float rounding) for every
// combination of transposes, with alpha, beta and leading dimensions wider than the rows, and a
// call with a short slice panics as gonum's does instead of reaching C.
func TestBLASGemm(t *testing.T) {
	const m, n, k, pad = 5, 7, 6, 3
	r := rand.New(rand.NewPCG(4, 5))
	fill := func(n int) ([]float32, []float64) {
		s, d := make([]float32, n), make([]float64, n)
		for i := range s {
			s[i] = float32(r.NormFloat64())
			d[i] = float64(s[i])
		}
		return s, d
	}
	var ours BLAS
	var ref gonum.Implementation
	for _, tA := range []blas.Transpose{blas.NoTrans, blas.Trans} {
		for _, tB := range []blas.Transpose{blas.NoTrans, blas.Trans} {
			ar, ac, br, bc := m, k, k, n
			if tA == blas.Trans {
				ar, ac = k, m
			}
			if tB == blas.Trans {
				br, bc = n, k
			}
			lda, ldb, ldc := ac+pad, bc+pad, n+pad
			a32, a64 := fill(ar * lda)
			b32, b64 := fill(br * ldb)
			c32, c64 := fill(m * ldc)
			want32, want64 := slices.Clone(c32), slices.Clone(c64)
			ours.Sgemm(tA, tB, m, n, k, 0.7, a32, lda, b32, ldb, 0.3, c32, ldc)
			ref.Sgemm(tA, tB, m, n, k, 0.7, a32, lda, b32, ldb, 0.3, want32, ldc)
			ours.Dgemm(tA, tB, m, n, k, 0.7, a64, lda, b64, ldb, 0.3, c64, ldc)
			ref.Dgemm(tA, tB, m, n, k, 0.7, a64, lda, b64, ldb, 0.3, want64, ldc)
			for i := range c32 {
				if math.Abs(float64(c32[i]-want32[i])) > 1e-5 || math.Abs(c64[i]-want64[i]) > 1e-12 {
					t.Fatalf("transposes %c %c, element %d: ours %v %v, gonum %v %v", tA, tB, i, c32[i], c64[i], want32[i], want64[i])
				}
			}
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("Sgemm with a short A did not panic")
		}
	}()
	ours.Sgemm(blas.NoTrans, blas.NoTrans, m, n, k, 1, make([]float32, m*k-1), k, make([]float32, k*n), n, 0, make([]float32, m*n), n)
}
