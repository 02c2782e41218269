package metrics

import (
	"math"
	"sync"
	"sync/atomic"

	"gonum.org/v1/gonum/floats"

	"github.com/grouploss/pipeline/internal/matmul"
	"github.com/grouploss/pipeline/internal/rowops"
)

func dot(a, b []float64) float64 { return floats.Dot(a, b) }

// Exact search on a float32 product. The dot products come from matmul in float32 (fast, with
// rounding that depends on the kernel), and only serve to screen: ranks are decided on float64
// distances computed with one fixed summation order (floats.Dot), exactly as if every distance
// were computed in float64. Screening is safe because the float32 error is bounded
// (matmul.ErrorBound): a row whose float32 distance exceeds the k-th smallest float32 distance by
// more than twice the bound cannot be among the k nearest, ties included.

// screen holds the float32 copy of the normalized rows and the screening margin.
type screen struct {
	x32    []float32
	margin float64 // 2 × the bound on |float32 distance - float64 distance|, plus slack
}

// newScreen converts the n×d normalized rows x (squared norms sq) to float32.
func newScreen(x, sq []float64, d int) *screen {
	x32 := make([]float32, len(x))
	for i, v := range x {
		x32[i] = float32(v)
	}
	maxSq := 0.0
	for _, v := range sq {
		maxSq = max(maxSq, v)
	}
	norm := math.Sqrt(maxSq)
	// distance = sq[j] - 2·dot: the error is twice the dot product's; a candidate is kept when
	// within two such errors of the k-th (its own and the k-th's), plus float64 rounding slack.
	return &screen{x32: x32, margin: 4*matmul.ErrorBound(d, norm, norm) + 1e-12}
}

// knn finds exact nearest neighbours of every row of the n×d row-major matrix x (L2-normalized
// or zero rows, squared norms sq, screen sc of x) among the other rows, by Euclidean distance computed as
// sq[j] - 2·x_q·x_j (|x_q|² is constant per query), ties broken by lower index. Query rows are
// processed in blocks of `block` rows: one float32 product gives the block×n dot products, a
// screen keeps the rows that can be among the kOf(q) nearest, and those are ranked on float64
// distances. visit(q, nb) receives the neighbours nearest first; nb is reused after visit returns.
// visit is called concurrently for distinct q when workers > 1; rep (may be nil) is told of each
// block done. Memory: n·d float32 plus workers·block·n float32.
func knn(x, sq []float64, sc *screen, n, d, block, workers int, rep *reporter, kOf func(q int) int, visit func(q int, nb []int32)) {
	block = min(max(block, 1), n)
	nBlocks := (n + block - 1) / block
	workers = min(max(workers, 1), nBlocks)

	var next atomic.Int64
	run := func() {
		buf := make([]float32, block*n)
		var sel selector
		for {
			b := int(next.Add(1) - 1)
			if b >= nBlocks {
				return
			}
			s := b * block
			m := min(block, n-s)
			matmul.ABt(buf, n, sc.x32[s*d:], m, sc.x32, n, d)
			for r := range m {
				q := s + r
				visit(q, sel.nearest(x, sq, d, buf[r*n:(r+1)*n], q, kOf(q), sc.margin))
			}
			rep.add(m)
		}
	}
	if workers == 1 {
		run()
		return
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(run)
	}
	wg.Wait()
}

// selector finds the k nearest rows of a query; its buffers are reused between queries.
type selector struct {
	top   []float64 // max-heap of the k smallest screening distances
	cands []int32
	exact *rowops.TopK[int32]
}

// nearest returns the k nearest rows j != q of query q, nearest first, given the float32 dot
// products dots of q with every row. Rows whose screening distance sq[j] - 2·dots[j] exceeds the
// k-th smallest by more than margin are dropped; the others are ranked on exact float64
// distances (for a zero query row: 0 for zero rows, 1 for all others). The result is valid until
// the next call.
func (s *selector) nearest(x, sq []float64, d int, dots []float32, q, k int, margin float64) []int32 {
	n := len(dots)
	s.cands = s.cands[:0]
	if sq[q] == 0 || k >= n-1 {
		// The zero query needs no dot products; with k >= n-1 every row is a neighbour.
		for j := range n {
			if j != q {
				s.cands = append(s.cands, int32(j))
			}
		}
	} else {
		s.screen(dots, sq, q, k, margin)
	}
	xq := x[q*d : (q+1)*d]
	zeroQuery := sq[q] == 0
	dist := func(j int) float64 {
		if zeroQuery {
			// The zero vector is at distance exactly 1 from every unit row (and 0 from zero
			// rows); do not let the rounding of |x_j|² order them.
			if sq[j] > 0 {
				return 1
			}
			return 0
		}
		return sq[j] - 2*dot(xq, x[j*d:(j+1)*d])
	}
	if s.exact == nil {
		s.exact = rowops.NewTopK[int32](k)
	} else {
		s.exact.Reset(k)
	}
	for _, j := range s.cands {
		s.exact.Push(dist(int(j)), j)
	}
	_, nearest := s.exact.Sorted()
	return nearest
}

// screen sets s.cands to the rows j != q, in increasing order, whose screening distance
// v_j = sq[j] - 2·dots[j] is within margin of the k-th smallest (1 <= k < len(dots)). One pass:
// a max-heap keeps the k smallest v_j so far, and rows within margin of its root (which only
// decreases) are collected, then filtered against the final k-th smallest.
func (s *selector) screen(dots []float32, sq []float64, q, k int, margin float64) {
	h := s.top[:0]
	for j, c := range dots {
		if j == q {
			continue
		}
		v := sq[j] - 2*float64(c)
		if len(h) < k {
			s.cands = append(s.cands, int32(j))
			h = append(h, v)
			for i := len(h) - 1; i > 0; {
				p := (i - 1) / 2
				if h[p] >= h[i] {
					break
				}
				h[p], h[i] = h[i], h[p]
				i = p
			}
			continue
		}
		if v > h[0]+margin {
			continue
		}
		s.cands = append(s.cands, int32(j))
		if v < h[0] {
			h[0] = v
			for i := 0; ; {
				l := 2*i + 1
				if l >= k {
					break
				}
				w := l
				if r := l + 1; r < k && h[r] > h[l] {
					w = r
				}
				if h[w] <= h[i] {
					break
				}
				h[w], h[i] = h[i], h[w]
				i = w
			}
		}
	}
	s.top = h
	lim := h[0] + margin
	kept := s.cands[:0]
	for _, j := range s.cands {
		if sq[j]-2*float64(dots[j]) <= lim {
			kept = append(kept, j)
		}
	}
	s.cands = kept
}
