package parallel

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// Every index is visited exactly once, by every entry point, small and large, on one core and on
// several.
func TestEachIndexOnce(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, procs := range []int{1, 2, 5} {
		runtime.GOMAXPROCS(procs)
		for _, n := range []int{0, 1, 2, 7, 1000} {
			for _, work := range []int{0, MinWork} {
				check := func(name string, visit func(hits []atomic.Int32)) {
					hits := make([]atomic.Int32, n)
					visit(hits)
					for i := range hits {
						if h := hits[i].Load(); h != 1 {
							t.Fatalf("%s procs %d n %d work %d: index %d visited %d times", name, procs, n, work, i, h)
						}
					}
				}
				check("For", func(h []atomic.Int32) { For(n, work, func(i int) { h[i].Add(1) }) })
				ranges := func(h []atomic.Int32) func(lo, hi int) {
					return func(lo, hi int) {
						for i := lo; i < hi; i++ {
							h[i].Add(1)
						}
					}
				}
				check("Range", func(h []atomic.Int32) { Range(n, work, ranges(h)) })
				for _, threads := range []int{0, 1, 3, 2000} {
					check("Threads", func(h []atomic.Int32) { Threads(n, threads, ranges(h)) })
				}
			}
		}
	}
}

// Large work is spread: with 2 processors and blocking jobs, For starts two at once.
func TestForUsesSeveralGoroutines(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	both := make(chan struct{})
	var arrived atomic.Int32
	var waited atomic.Bool
	For(2, MinWork, func(int) {
		if arrived.Add(1) == 2 {
			close(both)
		}
		select {
		case <-both:
		case <-time.After(10 * time.Second): // the jobs ran one after the other
			waited.Store(true)
		}
	})
	if waited.Load() {
		t.Error("For(2, MinWork) ran its two jobs one after the other with 2 processors")
	}
}
