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

func TestAutoKMeansRestarts(t *testing.T) {
	for _, tc := range []struct{ n, k, d, want int }{
		{5924, 100, 512, 10},   // CUB-100 test half
		{8131, 98, 1280, 10},   // Cars196 test half, raw features
		{10000, 500, 512, 7},   // 2.56e9: 2e10/2.56e9 = 7.8
		{20000, 1000, 512, 1},  // 1.02e10
		{100000, 1000, 512, 1}, // the memory benchmark
		{60502, 11316, 512, 1}, // Stanford Online Products test half
		{2, 1, 1, 10},
	} {
		if got := autoKMeansRestarts(tc.n, tc.k, tc.d); got != tc.want {
			t.Errorf("autoKMeansRestarts(%d, %d, %d) = %d, want %d", tc.n, tc.k, tc.d, got, tc.want)
		}
	}
}
