package matmul

import (
	"math"
	"testing"
)

// TestPeakOf: this project's machine kind (Zen 3, AVX2+FMA, 2 cores at 2445 MHz) peaks at
// 2 × 2.445 GHz × 8 lanes × 2 × 2 = 156.5 GFLOP/s; an AVX-512 CPU counts 16 lanes.
func TestPeakOf(t *testing.T) {
	zen3 := "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2445.430\nflags\t\t: fpu sse2 avx fma avx2\n\nprocessor\t: 1\ncpu MHz\t\t: 1000\n"
	p := PeakOf(zen3, 2)
	if math.Abs(p.GFLOPS-156.507) > 0.01 || p.FlopsPerCycle != 32 || p.VectorFloats != 8 {
		t.Errorf("zen 3: %+v, want 156.5 GFLOP/s, 32 flops per cycle", p)
	}
	if p := PeakOf("cpu MHz : 2000\nflags : avx2 fma avx512f\n", 4); p.GFLOPS != 4*2*64 {
		t.Errorf("avx-512: %v GFLOP/s, want 512", p.GFLOPS)
	}
	if p := PeakOf("flags : sse2\n", 1); p.GFLOPS != 0 {
		t.Errorf("no clock: %+v, want 0", p)
	}
}
