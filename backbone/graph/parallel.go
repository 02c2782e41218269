package graph

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// parallelMinWork is the amount of work (multiply-adds, or elements of an element-wise loop)
// below which a kernel runs on one goroutine: tiny graphs pay no goroutine costs.
const parallelMinWork = 1 << 17

// parallelFor runs f(i) for i in [0, n) on up to GOMAXPROCS goroutines (the caller's among
// them) when work is large.
func parallelFor(n, work int, f func(i int)) {
	p := runtime.GOMAXPROCS(0)
	if p <= 1 || n <= 1 || work < parallelMinWork {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	p = min(p, n)
	var next atomic.Int64
	work1 := func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			f(i)
		}
	}
	var wg sync.WaitGroup
	for w := 0; w < p-1; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work1()
		}()
	}
	// The caller works too: inside gorgonia's tape machine it is locked to its OS thread, and
	// blocking it at once would hand its processor to another thread and back for every job.
	work1()
	wg.Wait()
}

// parallelRange runs f(lo, hi) on consecutive ranges that cover [0, n), on up to GOMAXPROCS
// goroutines when work (about one unit per element of an element-wise loop) is large. Each
// index is in exactly one range, so a kernel that computes each index on its own gives the same
// result serial or parallel. There are several ranges per goroutine, so that a worker that
// loses its core on a loaded machine holds up the others less.
func parallelRange(n, work int, f func(lo, hi int)) {
	p := runtime.GOMAXPROCS(0)
	if p <= 1 || n <= 1 || work < parallelMinWork {
		f(0, n)
		return
	}
	jobs := min(n, 4*p)
	parallelFor(jobs, work, func(j int) { f(j*n/jobs, (j+1)*n/jobs) })
}

// parallelCopy copies src into dst (at least as long) by parallelRange.
func parallelCopy[T float](dst, src []T) {
	parallelRange(len(src), len(src), func(lo, hi int) { copy(dst[lo:hi], src[lo:hi]) })
}
