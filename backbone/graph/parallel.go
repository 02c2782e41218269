package graph

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// parallelMinWork is the multiply-add count below which gemm runs on one goroutine.
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
