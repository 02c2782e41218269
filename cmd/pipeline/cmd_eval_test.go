package main

import (
	"runtime"
	"testing"
)

// TestEvalParallelism: eval runs one metrics worker per core, and its block size keeps the
// workers' float32 buffers within evalBufferBytes; on two cores it is metrics' own default block
// (128 MiB each), so eval's memory there is what it was with two fixed workers.
func TestEvalParallelism(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, procs := range []int{1, 2, 3, 8, 64} {
		runtime.GOMAXPROCS(procs)
		for _, n := range []int{2, 100, 5924, 100000, 1000000} {
			workers, block := evalParallelism(n)
			if workers != procs {
				t.Errorf("GOMAXPROCS %d, n %d: %d workers, want one per core", procs, n, workers)
			}
			if block < 64 || block > 4096 {
				t.Errorf("GOMAXPROCS %d, n %d: block %d outside metrics' 64..4096", procs, n, block)
			}
			if bytes := workers * block * n * 4; block > 64 && bytes > evalBufferBytes {
				t.Errorf("GOMAXPROCS %d, n %d: %d workers x %d rows x %d x 4 bytes = %d > %d", procs, n, workers, block, n, bytes, evalBufferBytes)
			}
			if procs == 2 {
				if def := min(max((128<<20)/(4*n), 64), 4096); block != def {
					t.Errorf("two cores, n %d: block %d, want metrics' default %d", n, block, def)
				}
			}
		}
	}
}
