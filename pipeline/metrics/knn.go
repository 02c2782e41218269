package metrics

import (
	"sync"
	"sync/atomic"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/floats"
)

// gemmTile is gonum's internal gemm tile size: Dgemm computes in serial (one dot product over
// the whole row) when fewer than 4 tiles of C exist and in parallel (dot products accumulated
// tile by tile along d) otherwise. The two round differently, so knn keeps the path fixed for a
// given n: see knn.
const gemmTile = 64

func dot(a, b []float64) float64 { return floats.Dot(a, b) }

// knn finds exact nearest neighbours of every row of the n×d row-major matrix x among the other
// rows, by Euclidean distance computed as sq[j] - 2·x_q·x_j (|x_q|² is constant per query), ties
// broken by lower index. Query rows are processed in blocks of `block` rows: one Dgemm gives the
// block×n dot products, and for each query a bounded max-heap keeps its kOf(q) best candidates.
// visit(q, nb) receives the neighbours nearest first; nb is reused after visit returns. visit is
// called concurrently for distinct q when workers > 1; rep (may be nil) is told of each block
// done. Memory: workers·block·n float64.
func knn(x, sq []float64, n, d, block, workers int, rep *reporter, kOf func(q int) int, visit func(q int, nb []int32)) {
	if (n+gemmTile-1)/gemmTile < 4 {
		// Dgemm would take its serial path for every block size: use one block so the rounding
		// (and so near-tie order) never depends on the block size. Here n <= 192, tiny.
		block = n
	}
	block = min(max(block, 1), n)
	nBlocks := (n + block - 1) / block
	workers = min(max(workers, 1), nBlocks)

	var next atomic.Int64
	run := func() {
		buf := make([]float64, block*n)
		var h candHeap
		for {
			b := int(next.Add(1) - 1)
			if b >= nBlocks {
				return
			}
			s := b * block
			m := min(block, n-s)
			blas64.Implementation().Dgemm(blas.NoTrans, blas.Trans, m, n, d,
				1, x[s*d:], d, x, d, 0, buf, n)
			for r := range m {
				q := s + r
				visit(q, h.select_(buf[r*n:(r+1)*n], sq, q, kOf(q)))
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

// candHeap is a max-heap of (distance, index) candidates ordered so that the root is the worst
// (largest distance, then largest index).
type candHeap struct {
	dist []float64
	idx  []int32
}

func (h *candHeap) worse(a, b int) bool {
	return h.dist[a] > h.dist[b] || (h.dist[a] == h.dist[b] && h.idx[a] > h.idx[b])
}

func (h *candHeap) swap(a, b int) {
	h.dist[a], h.dist[b] = h.dist[b], h.dist[a]
	h.idx[a], h.idx[b] = h.idx[b], h.idx[a]
}

func (h *candHeap) down(i, size int) {
	for {
		l := 2*i + 1
		if l >= size {
			return
		}
		w := l
		if r := l + 1; r < size && h.worse(r, l) {
			w = r
		}
		if !h.worse(w, i) {
			return
		}
		h.swap(i, w)
		i = w
	}
}

func (h *candHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.worse(i, p) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

// select_ returns the k nearest candidates j != q, nearest first, where the distance of j is
// sq[j] - 2*dots[j] (for a zero query row: 0 for zero rows, 1 for all others). The result is
// valid until the next call.
func (h *candHeap) select_(dots, sq []float64, q, k int) []int32 {
	h.dist = h.dist[:0]
	h.idx = h.idx[:0]
	zeroQuery := sq[q] == 0
	for j, c := range dots {
		if j == q {
			continue
		}
		dj := sq[j] - 2*c
		if zeroQuery {
			// The zero vector is at distance exactly 1 from every unit row (and 0 from zero
			// rows); do not let the rounding of |x_j|² order them.
			dj = min(sq[j], 1)
			if dj > 0 {
				dj = 1
			}
		}
		if len(h.dist) < k {
			h.dist = append(h.dist, dj)
			h.idx = append(h.idx, int32(j))
			h.up(len(h.dist) - 1)
			continue
		}
		// j is larger than every index in the heap, so on equal distance it loses.
		if dj < h.dist[0] {
			h.dist[0] = dj
			h.idx[0] = int32(j)
			h.down(0, k)
		}
	}
	// Heap sort: repeatedly move the worst to the end.
	for size := len(h.dist); size > 1; size-- {
		h.swap(0, size-1)
		h.down(0, size-1)
	}
	return h.idx
}
