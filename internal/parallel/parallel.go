// Package parallel runs loops over index ranges on the machine's cores: the one place that
// decides how kernels split their work, how small a loop stays on one goroutine, and that the
// calling goroutine works too.
//
// The caller always takes part: inside gorgonia's tape machine it is locked to its OS thread,
// and blocking it at once on the others would hand its processor to another thread and back for
// every kernel (measured: about 1.5 ms more per forward of the head's 1280->512 layer).
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// MinWork is the amount of work (multiply-adds, or elements of an element-wise loop) below
// which a loop runs on the calling goroutine alone: tiny problems pay no goroutine costs.
const MinWork = 1 << 17

// For runs f(i) for i in [0, n) on up to GOMAXPROCS goroutines when work is at least MinWork,
// handing out indices one at a time (for jobs of uneven cost).
func For(n, work int, f func(i int)) {
	p := runtime.GOMAXPROCS(0)
	if p <= 1 || n <= 1 || work < MinWork {
		for i := range n {
			f(i)
		}
		return
	}
	run(n, min(p, n), f)
}

// Range runs f(lo, hi) on consecutive ranges that cover [0, n), on up to GOMAXPROCS goroutines
// when work is at least MinWork. Each index is in exactly one range, so a kernel that computes
// each index on its own gives the same result serial or parallel. There are several ranges per
// goroutine, so that a worker that loses its core on a loaded machine holds up the others less.
func Range(n, work int, f func(lo, hi int)) {
	p := runtime.GOMAXPROCS(0)
	if p <= 1 || n <= 1 || work < MinWork {
		f(0, n)
		return
	}
	jobs := min(n, 4*p)
	run(jobs, min(p, jobs), func(j int) { f(j*n/jobs, (j+1)*n/jobs) })
}

// Threads runs f(lo, hi) on `threads` consecutive ranges covering [0, n), one goroutine each
// (the caller's among them), whatever the size: for a caller that was told how many threads
// to use.
func Threads(n, threads int, f func(lo, hi int)) {
	threads = min(max(threads, 1), n)
	if threads <= 1 {
		f(0, n)
		return
	}
	run(threads, threads, func(t int) { f(t*n/threads, (t+1)*n/threads) })
}

// run calls f(i) for i in [0, n) on g goroutines, the caller's among them, each taking the next
// index until none is left.
func run(n, g int, f func(i int)) {
	var next atomic.Int64
	work := func() {
		for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
			f(i)
		}
	}
	var wg sync.WaitGroup
	for range g - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
}
