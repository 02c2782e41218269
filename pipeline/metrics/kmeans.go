package metrics

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

const (
	kmeansMaxIter = 300  // sklearn default
	kmeansTol     = 1e-4 // sklearn default, relative to the mean per-feature variance
)

// KMeans clusters the n rows of the n×d row-major matrix x (used as given, not normalized) into
// k clusters and returns one cluster index in [0, k) per row and the inertia (sum of squared
// Euclidean distances of the rows to their cluster centres).
//
// Each of the `restarts` runs starts from greedy k-means++ seeding (2+⌊ln k⌋ local trials, as
// sklearn) and performs Lloyd iterations until the assignment no longer changes, the total
// squared centre shift drops to 1e-4 × the mean per-feature variance (sklearn's tol), or 300
// iterations; clusters that become empty are re-seeded with the rows farthest from their centres.
// The run with the lowest inertia is kept (the earliest on ties). The result is deterministic for
// a given seed. Computation is in float64.
//
// KMeans panics if len(x) != n*d, n < 1, d < 1, k < 1, k > n or restarts < 1 (programmer errors).
func KMeans(x []float32, n, d, k, restarts int, seed int64) (assign []int, inertia float64) {
	if n < 1 || d < 1 || len(x) != n*d || k < 1 || k > n || restarts < 1 {
		panic(fmt.Sprintf("metrics: KMeans: bad arguments len(x)=%d n=%d d=%d k=%d restarts=%d",
			len(x), n, d, k, restarts))
	}
	xf := make([]float64, len(x))
	for i, v := range x {
		xf[i] = float64(v)
	}
	sq := make([]float64, n)
	for i := range n {
		sq[i] = dot(xf[i*d:(i+1)*d], xf[i*d:(i+1)*d])
	}
	block, _, _ := blockAndWorkers(Options{}, n)
	return kmeans(xf, sq, n, d, k, restarts, seed, block, 1, nil)
}

// kmeans runs `restarts` k-means runs on x (n×d, squared row norms sq), `workers` at a time,
// processing rows in blocks of `block` for the distance gemm, and returns the best. rep (may be
// nil) is told of each restart done.
func kmeans(x, sq []float64, n, d, k, restarts int, seed int64, block, workers int, rep *reporter) ([]int, float64) {
	tol := kmeansTol * meanVariance(x, n, d)
	type run struct {
		assign  []int
		inertia float64
	}
	runs := make([]run, restarts)
	one := func(r int) {
		rng := rand.New(rand.NewPCG(uint64(seed), uint64(r)))
		km := newKMeansRun(x, sq, n, d, k, block)
		km.seed(rng)
		runs[r].assign, runs[r].inertia = km.lloyd(tol)
		rep.add(1)
	}
	workers = min(max(workers, 1), restarts)
	if workers == 1 {
		for r := range restarts {
			one(r)
		}
	} else {
		var wg sync.WaitGroup
		next := make(chan int)
		for range workers {
			wg.Go(func() {
				for r := range next {
					one(r)
				}
			})
		}
		for r := range restarts {
			next <- r
		}
		close(next)
		wg.Wait()
	}
	best := 0
	for r := 1; r < restarts; r++ {
		if runs[r].inertia < runs[best].inertia {
			best = r
		}
	}
	return runs[best].assign, runs[best].inertia
}

// meanVariance is the mean over the d features of their (population) variance.
func meanVariance(x []float64, n, d int) float64 {
	mean := make([]float64, d)
	for i := range n {
		for j, v := range x[i*d : (i+1)*d] {
			mean[j] += v
		}
	}
	for j := range mean {
		mean[j] /= float64(n)
	}
	v := 0.0
	for i := range n {
		for j, xv := range x[i*d : (i+1)*d] {
			t := xv - mean[j]
			v += t * t
		}
	}
	return v / float64(n*d)
}

// kmeansRun is the state of one k-means run.
type kmeansRun struct {
	x, sq      []float64
	n, d, k    int
	block      int
	centers    []float64 // k×d
	csq        []float64 // squared centre norms
	assign     []int
	dist       []float64 // squared distance of each row to its centre
	buf        []float64 // block×k (assignment) or t×n (seeding) dot products
	sums       []float64 // k×d
	counts     []int
	oldCenters []float64
}

func newKMeansRun(x, sq []float64, n, d, k, block int) *kmeansRun {
	block = min(block, n)
	return &kmeansRun{
		x: x, sq: sq, n: n, d: d, k: k, block: block,
		centers: make([]float64, k*d), csq: make([]float64, k),
		assign: make([]int, n), dist: make([]float64, n),
		sums: make([]float64, k*d), counts: make([]int, k), oldCenters: make([]float64, k*d),
	}
}

func (km *kmeansRun) row(i int) []float64 { return km.x[i*km.d : (i+1)*km.d] }

func (km *kmeansRun) setCenter(c int, v []float64) {
	copy(km.centers[c*km.d:(c+1)*km.d], v)
	km.csq[c] = dot(v, v)
}

// seed is greedy k-means++: each new centre is the best (lowest resulting potential) of
// 2+⌊ln k⌋ rows sampled with probability proportional to their squared distance to the closest
// centre so far.
func (km *kmeansRun) seed(rng *rand.Rand) {
	n, d := km.n, km.d
	trials := 2 + int(math.Log(float64(km.k)))
	first := rng.IntN(n)
	km.setCenter(0, km.row(first))
	closest := make([]float64, n)
	cum := make([]float64, n)
	pot := 0.0
	for i := range n {
		closest[i] = max(km.sq[i]+km.sq[first]-2*dot(km.row(i), km.row(first)), 0)
		pot += closest[i]
	}
	cand := make([]int, trials)
	candRows := make([]float64, trials*d)
	buf := make([]float64, trials*n)
	best := make([]float64, n)
	for c := 1; c < km.k; c++ {
		s := 0.0
		for i, v := range closest {
			s += v
			cum[i] = s
		}
		for t := range cand {
			r := rng.Float64() * pot
			j, _ := slices.BinarySearch(cum, r) // first index with cum >= r
			cand[t] = min(j, n-1)
			copy(candRows[t*d:(t+1)*d], km.row(cand[t]))
		}
		blas64.Implementation().Dgemm(blas.NoTrans, blas.Trans, trials, n, d,
			1, candRows, d, km.x, d, 0, buf, n)
		bestT, bestPot := -1, 0.0
		for t := range cand {
			p := 0.0
			ct := cand[t]
			for i, dt := range buf[t*n : (t+1)*n] {
				p += min(closest[i], max(km.sq[i]+km.sq[ct]-2*dt, 0))
			}
			if bestT < 0 || p < bestPot {
				bestT, bestPot = t, p
			}
		}
		ct := cand[bestT]
		for i, dt := range buf[bestT*n : (bestT+1)*n] {
			best[i] = min(closest[i], max(km.sq[i]+km.sq[ct]-2*dt, 0))
		}
		closest, best = best, closest
		pot = bestPot
		km.setCenter(c, km.row(ct))
	}
}

// assignStep assigns every row to its nearest centre (ties to the lower centre index), records
// the squared distances and returns whether any assignment changed and the inertia.
func (km *kmeansRun) assignStep(first bool) (changed bool, inertia float64) {
	n, d, k := km.n, km.d, km.k
	if len(km.buf) < km.block*k {
		km.buf = make([]float64, km.block*k)
	}
	for s := 0; s < n; s += km.block {
		m := min(km.block, n-s)
		blas64.Implementation().Dgemm(blas.NoTrans, blas.Trans, m, k, d,
			1, km.x[s*d:], d, km.centers, d, 0, km.buf, k)
		for r := range m {
			i := s + r
			dots := km.buf[r*k : (r+1)*k]
			bc, bv := 0, km.csq[0]-2*dots[0]
			for c := 1; c < k; c++ {
				if v := km.csq[c] - 2*dots[c]; v < bv {
					bc, bv = c, v
				}
			}
			if first || km.assign[i] != bc {
				changed = true
				km.assign[i] = bc
			}
			km.dist[i] = max(km.sq[i]+bv, 0)
			inertia += km.dist[i]
		}
	}
	return changed, inertia
}

// updateCenters moves every centre to the mean of its rows, re-seeding empty clusters with the
// rows farthest from their centres, and returns the total squared centre shift.
func (km *kmeansRun) updateCenters() float64 {
	n, d, k := km.n, km.d, km.k
	copy(km.oldCenters, km.centers)
	clear(km.sums)
	clear(km.counts)
	for i := range n {
		c := km.assign[i]
		km.counts[c]++
		s := km.sums[c*d : (c+1)*d]
		for j, v := range km.row(i) {
			s[j] += v
		}
	}
	var empty []int
	for c := range k {
		if km.counts[c] == 0 {
			empty = append(empty, c)
		}
	}
	if len(empty) > 0 {
		order := make([]int, n)
		for i := range order {
			order[i] = i
		}
		slices.SortStableFunc(order, func(a, b int) int {
			switch {
			case km.dist[a] > km.dist[b]:
				return -1
			case km.dist[a] < km.dist[b]:
				return 1
			}
			return 0
		})
		for e, c := range empty {
			if e >= n {
				break
			}
			i := order[e]
			old := km.assign[i]
			if km.counts[old] <= 1 {
				continue // moving the row would empty its cluster
			}
			km.counts[old]--
			os := km.sums[old*d : (old+1)*d]
			for j, v := range km.row(i) {
				os[j] -= v
			}
			km.assign[i] = c
			km.dist[i] = 0
			km.counts[c] = 1
			copy(km.sums[c*d:(c+1)*d], km.row(i))
		}
	}
	shift := 0.0
	for c := range k {
		if km.counts[c] == 0 {
			continue // keep the old centre
		}
		ctr := km.centers[c*d : (c+1)*d]
		inv := 1 / float64(km.counts[c])
		for j, v := range km.sums[c*d : (c+1)*d] {
			ctr[j] = v * inv
		}
		km.csq[c] = dot(ctr, ctr)
		for j, v := range ctr {
			t := v - km.oldCenters[c*d+j]
			shift += t * t
		}
	}
	return shift
}

// lloyd iterates assignment and centre updates and returns the final assignment (a copy) with
// its inertia with respect to the final centres.
func (km *kmeansRun) lloyd(tol float64) ([]int, float64) {
	for it := range kmeansMaxIter {
		changed, _ := km.assignStep(it == 0)
		if it > 0 && !changed {
			break
		}
		if km.updateCenters() <= tol {
			break
		}
	}
	_, inertia := km.assignStep(false)
	return slices.Clone(km.assign), inertia
}
