package metrics

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	"github.com/grouploss/pipeline/internal/matmul"
	"github.com/grouploss/pipeline/internal/parallel"
)

const (
	kmeansMaxIter = 300  // sklearn default
	kmeansTol     = 1e-4 // sklearn default, relative to the mean per-feature variance
)

// The k-means budget (PlanKMeans). One Lloyd iteration costs about n·k·d multiply-adds (n rows,
// k centres, dimension d) in the float32 product, and a restart adds a k-means++ seeding of about
// (2+ln k)·n·k·d. At 100k x 1000 x 512 on 2 Zen 3 cores an iteration took 2.3-2.6 CPU s and the
// seeding 32 CPU s: 300 iterations would take over 6 minutes.
const (
	// kmeansRestartBudget bounds restarts·n·k·d when the caller leaves the restarts to the plan:
	// 10 restarts (sklearn's classic n_init) while n·k·d <= 2e9 (CUB, Cars196), fewer above, 1
	// (sklearn's n_init="auto" for k-means++) from n·k·d > 1e10 (100k x 1000 classes x 512-d,
	// Stanford Online Products).
	kmeansRestartBudget = 2e10
	defaultRestarts     = 10
	// kmeansIterBudget bounds maxIter·n·k·d, the multiply-adds of one restart's Lloyd iterations
	// (2.56 TFLOP, about 25 s on 2 cores): sklearn's 300 iterations while n·k·d <= 4.3e9 (every
	// CUB-200 or Cars196 evaluation, raw 1280-d features included), fewer above.
	kmeansIterBudget = 1.28e12
	// kmeansMinIter is the least cap, faiss's default number of iterations (whatever the size).
	kmeansMinIter = 25
)

// KMeansPlan is how much k-means work an evaluation does for NMI and AMI (PlanKMeans).
type KMeansPlan struct {
	Clusters int `json:"clusters"`
	// Restarts is the number of k-means++ seedings, each followed by Lloyd iterations; the
	// lowest-inertia clustering is kept.
	Restarts int `json:"restarts"`
	// MaxIter caps the Lloyd iterations of each restart (sklearn: 300). A restart also stops
	// when no assignment changes or the total squared centre shift is at most Tol times the
	// mean per-feature variance (sklearn's tol).
	MaxIter int     `json:"max_iter"`
	Tol     float64 `json:"tol"`
	// Reason says where Restarts and MaxIter come from.
	Reason string `json:"reason"`
}

// PlanKMeans is the k-means work for n rows of dimension d in k clusters. restarts > 0 is kept
// as given; 0 lets the plan choose: 10 for data up to CUB or Cars196 size, fewer above, down to
// 1. The iteration cap is sklearn's 300 unless 300 iterations exceed 1.28e12 multiply-adds
// (n·k·d > 4.3e9); then it is what that budget allows, at least 25 (faiss's default): 25 at
// 100k x 1000 x 512. The cap can stop a restart before it converges: NMI and AMI are then those of
// the clustering reached, as with sklearn's max_iter. The plan depends on the sizes only, so
// results stay the same on every machine.
func PlanKMeans(n, d, k, restarts int) KMeansPlan {
	w := float64(n) * float64(k) * float64(d)
	p := KMeansPlan{Clusters: k, Restarts: restarts, MaxIter: kmeansMaxIter, Tol: kmeansTol}
	var why []string
	switch {
	case restarts > 0:
		why = append(why, fmt.Sprintf("%d restart%s (requested)", p.Restarts, plural(p.Restarts)))
	case w*defaultRestarts <= kmeansRestartBudget:
		p.Restarts = defaultRestarts
		why = append(why, fmt.Sprintf("%d restarts (the default)", p.Restarts))
	default:
		p.Restarts = int(max(kmeansRestartBudget/w, 1))
		why = append(why, fmt.Sprintf("%d restart%s instead of %d: restarts·n·k·d within %.0e", p.Restarts, plural(p.Restarts), defaultRestarts, kmeansRestartBudget))
	}
	if it := kmeansIterBudget / w; it < kmeansMaxIter {
		p.MaxIter = max(int(it), kmeansMinIter)
		why = append(why, fmt.Sprintf("at most %d Lloyd iterations each instead of %d: iterations·n·k·d within %.3g multiply-adds (at least %d)",
			p.MaxIter, kmeansMaxIter, kmeansIterBudget, kmeansMinIter))
	} else {
		why = append(why, fmt.Sprintf("at most %d Lloyd iterations each", p.MaxIter))
	}
	p.Reason = strings.Join(why, ", ")
	return p
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// KMeansReport is what a k-means clustering did under its plan.
type KMeansReport struct {
	KMeansPlan
	// Iterations are the Lloyd iterations of each restart; Capped counts the restarts stopped
	// by MaxIter before converging.
	Iterations []int `json:"iterations"`
	Capped     int   `json:"capped"`
	// Best is the restart kept (lowest inertia), Inertia its sum of squared distances of the
	// normalized rows to their centres.
	Best    int     `json:"best"`
	Inertia float64 `json:"inertia"`
}

// KMeans clusters the n rows of the n×d row-major matrix x (used as given, not normalized) into
// k clusters and returns one cluster index in [0, k) per row and the inertia (sum of squared
// Euclidean distances of the rows to their cluster centres).
//
// Each of the `restarts` runs starts from greedy k-means++ seeding (2+⌊ln k⌋ local trials, as
// sklearn) and performs Lloyd iterations until the assignment no longer changes, the total
// squared centre shift drops to 1e-4 × the mean per-feature variance (sklearn's tol), or 300
// iterations; clusters that become empty are re-seeded with the rows farthest from their centres.
// The run with the lowest inertia is kept (the earliest on ties). The result is deterministic for
// a given seed. Decisions (nearest centre, k-means++ potentials) are taken on float64 distances;
// the float32 matrix product only screens out centres that cannot win (see knn.go).
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
	plan := KMeansPlan{Clusters: k, Restarts: restarts, MaxIter: kmeansMaxIter, Tol: kmeansTol}
	rep := kmeans(xf, sq, newScreen(xf, sq, d).x32, n, d, plan, seed, block, 1, nil)
	return rep.assign, rep.Inertia
}

// kmeansResult is a clustering with the report of how it was found.
type kmeansResult struct {
	KMeansReport
	assign []int
}

// kmeans runs plan.Restarts k-means runs of plan.Clusters centres on x (n×d, squared row norms
// sq, x32 its float32 copy), `workers` at a time (a lone run uses the workers for its distance
// steps), processing rows in blocks of `block` for the distance product, and returns the best.
// rep (may be nil) is told of each restart done.
func kmeans(x, sq []float64, x32 []float32, n, d int, plan KMeansPlan, seed int64, block, workers int, rep *reporter) kmeansResult {
	k, restarts := plan.Clusters, plan.Restarts
	tol := plan.Tol * meanVariance(x, n, d)
	type run struct {
		assign  []int
		inertia float64
		iters   int
		capped  bool
	}
	runs := make([]run, restarts)
	var threads int
	one := func(r int) {
		rng := rand.New(rand.NewPCG(uint64(seed), uint64(r)))
		km := newKMeansRun(x, sq, x32, n, d, k, block, threads)
		km.seed(rng)
		ru := &runs[r]
		ru.assign, ru.inertia, ru.iters, ru.capped = km.lloyd(tol, plan.MaxIter)
		rep.add(1)
	}
	workers = max(workers, 1)
	threads = max(workers/restarts, 1)
	workers = min(workers, restarts)
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
	res := kmeansResult{KMeansReport: KMeansReport{KMeansPlan: plan, Iterations: make([]int, restarts)}}
	for r, ru := range runs {
		res.Iterations[r] = ru.iters
		if ru.capped {
			res.Capped++
		}
		if ru.inertia < runs[res.Best].inertia {
			res.Best = r
		}
	}
	res.assign, res.Inertia = runs[res.Best].assign, runs[res.Best].inertia
	return res
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
	x32        []float32 // x in float32, for the screening product
	n, d, k    int
	block      int
	threads    int       // goroutines of the distance steps
	centers    []float64 // k×d
	c32        []float32 // centers in float32
	csq        []float64 // squared centre norms
	assign     []int
	next       []int     // the assignment being computed
	dist       []float64 // squared distance of each row to its centre
	sums       []float64 // k×d
	counts     []int
	oldCenters []float64
}

func newKMeansRun(x, sq []float64, x32 []float32, n, d, k, block, threads int) *kmeansRun {
	block = min(block, n)
	return &kmeansRun{
		x: x, sq: sq, x32: x32, n: n, d: d, k: k, block: block, threads: max(threads, 1),
		centers: make([]float64, k*d), c32: make([]float32, k*d), csq: make([]float64, k),
		assign: make([]int, n), next: make([]int, n), dist: make([]float64, n),
		sums: make([]float64, k*d), counts: make([]int, k), oldCenters: make([]float64, k*d),
	}
}

func (km *kmeansRun) row(i int) []float64 { return km.x[i*km.d : (i+1)*km.d] }

func (km *kmeansRun) setCenter(c int, v []float64) {
	copy(km.centers[c*km.d:(c+1)*km.d], v)
	km.csq[c] = dot(v, v)
}

// margin is twice the bound on the error of a float32 distance sq[i] + csq - 2·dot between a
// row and vectors of squared norm at most maxCsq, plus float64 rounding slack: a float32
// distance more than margin above another's cannot be the smaller exact distance.
func (km *kmeansRun) margin(maxCsq float64) float64 {
	maxSq := 0.0
	for _, v := range km.sq {
		maxSq = max(maxSq, v)
	}
	return 4*matmul.ErrorBound(km.d, math.Sqrt(maxSq), math.Sqrt(maxCsq)) + 1e-12*(1+maxCsq)
}

// seed is greedy k-means++: each new centre is the best (lowest resulting potential) of
// 2+⌊ln k⌋ rows sampled with probability proportional to their squared distance to the closest
// centre so far. A row's distance to a trial is computed exactly (float64) only when the float32
// product cannot rule out that it is below the row's current closest distance.
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
	maxSq := 0.0
	for _, v := range km.sq {
		maxSq = max(maxSq, v)
	}
	margin := km.margin(maxSq)
	cand := make([]int, trials)
	candRows := make([]float32, trials*d)
	buf := make([]float32, trials*n)
	newClosest := make([]float64, trials*n)
	pots := make([]float64, trials)
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
			copy(candRows[t*d:(t+1)*d], km.x32[cand[t]*d:(cand[t]+1)*d])
		}
		matmul.ParallelABt(buf, n, candRows, trials, km.x32, n, d, km.threads)
		parallel.Threads(trials, km.threads, func(lo, hi int) {
			for t := lo; t < hi; t++ {
				ct := cand[t]
				xc := km.row(ct)
				nc := newClosest[t*n : (t+1)*n]
				p := 0.0
				for i, dt := range buf[t*n : (t+1)*n] {
					v := closest[i]
					if km.sq[i]+km.sq[ct]-2*float64(dt) <= v+margin {
						v = min(v, max(km.sq[i]+km.sq[ct]-2*dot(km.row(i), xc), 0))
					}
					nc[i] = v
					p += v
				}
				pots[t] = p
			}
		})
		bestT := 0
		for t := 1; t < trials; t++ {
			if pots[t] < pots[bestT] {
				bestT = t
			}
		}
		copy(closest, newClosest[bestT*n:(bestT+1)*n])
		pot = pots[bestT]
		km.setCenter(c, km.row(cand[bestT]))
	}
}

// assignStep assigns every row to its nearest centre (ties to the lower centre index), records
// the squared distances and returns whether any assignment changed and the inertia. Centres
// whose float32 distance is more than the margin above a row's smallest are not rechecked in
// float64.
func (km *kmeansRun) assignStep(first bool) (changed bool, inertia float64) {
	n, d, k := km.n, km.d, km.k
	maxCsq := 0.0
	for c, v := range km.centers {
		km.c32[c] = float32(v)
	}
	for _, v := range km.csq {
		maxCsq = max(maxCsq, v)
	}
	margin := km.margin(maxCsq)
	nBlocks := (n + km.block - 1) / km.block
	parallel.Threads(nBlocks, km.threads, func(lo, hi int) {
		buf := make([]float32, km.block*k)
		for b := lo; b < hi; b++ {
			s := b * km.block
			m := min(km.block, n-s)
			matmul.ABt(buf, k, km.x32[s*d:], m, km.c32, k, d)
			for r := range m {
				i := s + r
				dots := buf[r*k : (r+1)*k]
				lim := math.Inf(1)
				for c, v := range dots {
					lim = min(lim, km.csq[c]-2*float64(v))
				}
				lim += margin
				xi := km.row(i)
				bc, bv := -1, 0.0
				for c, v := range dots {
					if km.csq[c]-2*float64(v) > lim {
						continue
					}
					if e := km.csq[c] - 2*dot(xi, km.centers[c*d:(c+1)*d]); bc < 0 || e < bv {
						bc, bv = c, e
					}
				}
				km.next[i] = bc
				km.dist[i] = max(km.sq[i]+bv, 0)
			}
		}
	})
	for i, c := range km.next {
		if first || km.assign[i] != c {
			changed = true
			km.assign[i] = c
		}
		inertia += km.dist[i]
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

// lloyd iterates assignment and centre updates, at most maxIter times, and returns the final
// assignment (a copy) with its inertia with respect to the final centres, the iterations done
// and whether maxIter stopped them before convergence.
func (km *kmeansRun) lloyd(tol float64, maxIter int) (assign []int, inertia float64, iters int, capped bool) {
	capped = true
	for it := range maxIter {
		iters = it + 1
		changed, _ := km.assignStep(it == 0)
		if it > 0 && !changed {
			capped = false
			break
		}
		if km.updateCenters() <= tol {
			capped = false
			break
		}
	}
	_, inertia = km.assignStep(false)
	return slices.Clone(km.assign), inertia, iters, capped
}
