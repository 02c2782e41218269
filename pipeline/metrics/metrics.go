// Package metrics computes retrieval and clustering metrics of embeddings: Recall@K, R-precision
// and MAP@R (Musgrave et al. 2020, "A Metric Learning Reality Check") from exact nearest
// neighbours, and NMI/AMI of a k-means clustering against the labels (sklearn definitions).
//
// All functions are pure (no I/O). Every decision (which row is nearer, which centre is nearest,
// which k-means++ trial is best) is taken on float64 values; float32 inputs are widened exactly,
// so Evaluate(x) and Evaluate64(float64(x)) give identical results.
//
// Nearest neighbours and k-means distances are exact. They are computed in blocks of rows with a
// float32 matrix product (internal/matmul: OpenBLAS), whose proven error bound screens out the
// rows that cannot be among the nearest; the rest are ranked on float64 distances with one fixed
// summation order (see knn.go). Memory is O(Workers·BlockSize·n + n·d), never n×n.
//
// Conventions:
//   - Rows are L2-normalized (on a copy) before anything else. A row with zero norm stays the zero
//     vector: its Euclidean distance to every unit row is 1 and to other zero rows 0, so a zero
//     query ranks the other zero rows first, then all other rows by index; for a unit query a
//     zero row ranks like an orthogonal row. Nothing produces NaN; non-finite inputs are rejected
//     with an error.
//   - Neighbours are ordered by increasing Euclidean distance, ties broken by lower row index; the
//     query itself is excluded.
//   - Recall@K averages over all queries (a query whose label occurs once can never hit).
//     R-precision and MAP@R are undefined for such "lone" queries (R = 0) and are averaged over
//     the queries with R >= 1 only; if there are none they are 0.
package metrics

import (
	"errors"
	"fmt"
	"math"
	"runtime"
)

// Result holds the metrics of one evaluation. All values are fractions in [0, 1], except AMI
// which can be slightly negative for worse-than-chance clusterings.
type Result struct {
	RecallAt1  float64 `json:"recall_at_1"`
	RecallAt2  float64 `json:"recall_at_2"`
	RecallAt4  float64 `json:"recall_at_4"`
	RecallAt8  float64 `json:"recall_at_8"`
	NMI        float64 `json:"nmi"`
	AMI        float64 `json:"ami"`
	MAPAtR     float64 `json:"map_at_r"`
	RPrecision float64 `json:"r_precision"`
}

// Options tunes Evaluate. The zero value is valid.
type Options struct {
	// KMeansRestarts is the number of k-means++ initialisations (the lowest-inertia run is kept);
	// 0 lets PlanKMeans choose: 10 up to CUB or Cars196 size, fewer for larger n·k·d. The Lloyd
	// iteration cap always comes from PlanKMeans (300 at those sizes).
	KMeansRestarts int
	// Seed makes k-means deterministic: equal seeds give equal clusterings.
	Seed int64
	// BlockSize is the number of query rows per matrix-product block; 0 picks one so that a
	// block's float32 buffer is about 128 MiB. Results do not depend on it.
	BlockSize int
	// Workers is the number of blocks (and k-means restarts) processed concurrently; 0 means
	// runtime.GOMAXPROCS(0), at most 8 (1 GiB of block buffers).
	// A lone k-means run uses them for its distance steps. Results do not depend on it.
	Workers int
	// SkipClustering leaves NMI and AMI at 0 and skips k-means (retrieval metrics only).
	SkipClustering bool
	// Progress, when not nil, is told how far the work got: called with done = 0 when a stage
	// starts (StageNeighbors, then StageKMeans), then as units complete, the last call of a stage
	// with done == total. Calls are never concurrent, done grows within a stage, and results do
	// not depend on Progress.
	Progress func(stage Stage, done, total int)
	// KMeansDone, when not nil, is told what the clustering behind NMI and AMI did: its plan
	// (restarts, iteration cap and why), the iterations of each restart and the one kept.
	KMeansDone func(KMeansReport)
}

const (
	blockBufferBytes = 128 << 20
	// defaultBufferBytes bounds the block buffers of all the workers together when
	// Options.Workers is left 0.
	defaultBufferBytes = 1 << 30
	maxRecallK         = 8
)

// Evaluate computes retrieval and clustering metrics of the n×d row-major float32 embeddings emb
// (len n*d) with one integer label per row. See the package comment for conventions. k-means
// uses k = number of distinct labels on the normalized embeddings.
func Evaluate(emb []float32, n, d int, labels []int, opts Options) (Result, error) {
	if err := checkShape(len(emb), n, d, len(labels)); err != nil {
		return Result{}, err
	}
	x := make([]float64, len(emb))
	for i, v := range emb {
		x[i] = float64(v)
	}
	return evaluate(x, n, d, labels, opts)
}

// Evaluate64 is Evaluate for float64 embeddings (len n*d, row-major). emb is not modified.
func Evaluate64(emb []float64, n, d int, labels []int, opts Options) (Result, error) {
	if err := checkShape(len(emb), n, d, len(labels)); err != nil {
		return Result{}, err
	}
	return evaluate(append([]float64(nil), emb...), n, d, labels, opts)
}

// Neighbors returns, for each of the n rows of the n×d row-major embeddings emb, the indices of
// its k nearest other rows after L2 normalization (Euclidean distance, ties by lower index),
// nearest first, as a flat n*k slice (row i at [i*k:(i+1)*k]). 1 <= k <= n-1. Only
// opts.BlockSize and opts.Workers are used.
func Neighbors(emb []float32, n, d, k int, opts Options) ([]int, error) {
	if err := checkShape(len(emb), n, d, n); err != nil {
		return nil, err
	}
	if k < 1 || k > n-1 {
		return nil, fmt.Errorf("metrics: k = %d outside [1, n-1 = %d]", k, n-1)
	}
	x := make([]float64, len(emb))
	for i, v := range emb {
		x[i] = float64(v)
	}
	if err := checkFinite(x, d); err != nil {
		return nil, err
	}
	sq := normalizeRows(x, n, d)
	block, workers, err := blockAndWorkers(opts, n)
	if err != nil {
		return nil, err
	}
	out := make([]int, n*k)
	rep := startStage(opts.Progress, StageNeighbors, n)
	knn(x, sq, newScreen(x, sq, d), n, d, block, workers, rep, func(int) int { return k }, func(q int, nb []int32) {
		for r, j := range nb {
			out[q*k+r] = int(j)
		}
	})
	return out, nil
}

func checkShape(lenEmb, n, d, lenLabels int) error {
	switch {
	case n < 2:
		return fmt.Errorf("metrics: need at least 2 rows, got n = %d", n)
	case d < 1:
		return fmt.Errorf("metrics: need dimension d >= 1, got %d", d)
	case lenEmb != n*d:
		return fmt.Errorf("metrics: embeddings have %d values, want n*d = %d*%d = %d", lenEmb, n, d, n*d)
	case n > math.MaxInt32:
		return fmt.Errorf("metrics: n = %d rows exceeds %d", n, math.MaxInt32)
	case lenLabels != n:
		return fmt.Errorf("metrics: got %d labels for %d rows", lenLabels, n)
	}
	return nil
}

func checkFinite(x []float64, d int) error {
	for i, v := range x {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("metrics: embedding row %d column %d is %v", i/d, i%d, v)
		}
	}
	return nil
}

// MaxKMeansRestarts bounds Options.KMeansRestarts: each restart is a full k-means run (and a
// record of it is allocated up front); beyond a few dozen the kept clustering no longer changes.
const MaxKMeansRestarts = 1000

// MaxWorkers bounds Options.Workers.
const MaxWorkers = 1024

func blockAndWorkers(opts Options, n int) (block, workers int, err error) {
	if opts.BlockSize < 0 || opts.Workers < 0 || opts.KMeansRestarts < 0 {
		return 0, 0, errors.New("metrics: BlockSize, Workers and KMeansRestarts must be >= 0")
	}
	if opts.KMeansRestarts > MaxKMeansRestarts || opts.Workers > MaxWorkers {
		return 0, 0, fmt.Errorf("metrics: %d k-means restarts and %d workers, want at most %d and %d", opts.KMeansRestarts, opts.Workers, MaxKMeansRestarts, MaxWorkers)
	}
	block = opts.BlockSize
	if block == 0 {
		block = min(max(blockBufferBytes/(4*n), 64), 4096)
	}
	workers = opts.Workers
	if workers == 0 {
		// One per core, as many as fit the buffer budget when each takes a full block.
		workers = max(min(runtime.GOMAXPROCS(0), defaultBufferBytes/blockBufferBytes), 1)
	}
	workers = min(workers, runtime.GOMAXPROCS(0)*4)
	return block, workers, nil
}

// normalizeRows scales every row of the n×d matrix x to unit L2 norm in place (zero rows are
// left zero) and returns the squared norms of the normalized rows as computed (1 up to rounding,
// or 0).
func normalizeRows(x []float64, n, d int) []float64 {
	sq := make([]float64, n)
	for i := range n {
		row := x[i*d : (i+1)*d]
		s := 0.0
		for _, v := range row {
			s += v * v
		}
		norm := math.Sqrt(s)
		if math.IsInf(s, 0) || (s < 1e-290 && s > 0) {
			// The squares overflow or lose precision to underflow: scale by the largest
			// magnitude first.
			m := 0.0
			for _, v := range row {
				m = max(m, math.Abs(v))
			}
			s = 0
			for _, v := range row {
				s += (v / m) * (v / m)
			}
			norm = m * math.Sqrt(s)
		}
		if norm == 0 {
			continue
		}
		for j := range row {
			row[j] /= norm
		}
		sq[i] = dot(row, row)
	}
	return sq
}

func evaluate(x []float64, n, d int, labels []int, opts Options) (Result, error) {
	if err := checkFinite(x, d); err != nil {
		return Result{}, err
	}
	block, workers, err := blockAndWorkers(opts, n)
	if err != nil {
		return Result{}, err
	}
	sq := normalizeRows(x, n, d)
	dense, nClasses := denseLabels(labels)
	count := make([]int, nClasses)
	for _, c := range dense {
		count[c]++
	}

	type perQuery struct {
		hit [4]bool // hit within 1, 2, 4, 8
		rp  float64
		ap  float64
	}
	pq := make([]perQuery, n)
	kOf := func(q int) int { return min(max(maxRecallK, count[dense[q]]-1), n-1) }
	rep := startStage(opts.Progress, StageNeighbors, n)
	sc := newScreen(x, sq, d)
	knn(x, sq, sc, n, d, block, workers, rep, kOf, func(q int, nb []int32) {
		lab := dense[q]
		r := count[lab] - 1
		res := &pq[q]
		first := -1
		hits := 0
		prec := 0.0
		for rank, j := range nb {
			if dense[j] != lab {
				continue
			}
			if first < 0 {
				first = rank
			}
			if rank < r {
				hits++
				prec += float64(hits) / float64(rank+1)
			}
		}
		for t, k := range [4]int{1, 2, 4, 8} {
			res.hit[t] = first >= 0 && first < k
		}
		if r > 0 {
			res.rp = float64(hits) / float64(r)
			res.ap = prec / float64(r)
		}
	})

	var out Result
	var hits [4]int
	nonLone := 0
	for q := range pq {
		for t := range hits {
			if pq[q].hit[t] {
				hits[t]++
			}
		}
		if count[dense[q]] > 1 {
			nonLone++
			out.RPrecision += pq[q].rp
			out.MAPAtR += pq[q].ap
		}
	}
	out.RecallAt1 = float64(hits[0]) / float64(n)
	out.RecallAt2 = float64(hits[1]) / float64(n)
	out.RecallAt4 = float64(hits[2]) / float64(n)
	out.RecallAt8 = float64(hits[3]) / float64(n)
	if nonLone > 0 {
		out.RPrecision /= float64(nonLone)
		out.MAPAtR /= float64(nonLone)
	}

	if !opts.SkipClustering {
		plan := PlanKMeans(n, d, nClasses, opts.KMeansRestarts)
		km := kmeans(x, sq, sc.x32, n, d, plan, opts.Seed, block, workers,
			startStage(opts.Progress, StageKMeans, plan.Restarts))
		out.NMI = NMI(labels, km.assign)
		out.AMI = AMI(labels, km.assign)
		if opts.KMeansDone != nil {
			opts.KMeansDone(km.KMeansReport)
		}
	}
	return out, nil
}

// denseLabels maps arbitrary integer labels to 0..k-1 in order of first appearance.
func denseLabels(labels []int) (dense []int, k int) {
	ids := make(map[int]int)
	dense = make([]int, len(labels))
	for i, l := range labels {
		c, ok := ids[l]
		if !ok {
			c = len(ids)
			ids[l] = c
		}
		dense[i] = c
	}
	return dense, len(ids)
}
