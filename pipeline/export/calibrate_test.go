package export

import (
	"math"
	"math/rand"
	"testing"
)

// reluLike returns n values as a ReLU6 leaves them: about half exact zeros, the rest in (0, 6].
func reluLike(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(min(max(r.NormFloat64()*2, 0), 6))
	}
	return x
}

// TestCalibratorCounts checks Observe against a plain per-value computation of the minimum,
// maximum and histogram of |x|, over batches whose largest |x| grows (the histogram is rebinned
// between them) and odd lengths (the interleaved counting's remainder).
func TestCalibratorCounts(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	c := NewCalibrator([]string{"t"})
	var want tensorStats
	want.min, want.max, want.hist = math.Inf(1), math.Inf(-1), make([]float64, histBins)
	for _, n := range []int{1001, 7, 4096, 333} {
		x := reluLike(r, n)
		x[n/2] = -float32(n) / 100 // a negative value, and a larger |x| each batch
		if err := c.Observe("t", x); err != nil {
			t.Fatal(err)
		}
		amax := 0.0
		for _, v := range x {
			f := float64(v)
			want.min, want.max, amax = math.Min(want.min, f), math.Max(want.max, f), math.Max(amax, math.Abs(f))
		}
		if amax > want.absMax {
			want.rebin(amax)
		}
		k := float64(histBins) / want.absMax
		for _, v := range x {
			want.hist[min(int(math.Abs(float64(v))*k), histBins-1)]++
		}
	}
	got := c.stats["t"]
	if got.min != want.min || got.max != want.max || got.absMax != want.absMax {
		t.Fatalf("range [%v, %v] |x| <= %v, want [%v, %v] |x| <= %v", got.min, got.max, got.absMax, want.min, want.max, want.absMax)
	}
	for b := range want.hist {
		if got.hist[b] != want.hist[b] {
			t.Fatalf("bin %d holds %v, want %v", b, got.hist[b], want.hist[b])
		}
	}
	if err := c.Observe("t", []float32{1, 2, float32(math.NaN()), 3, 4}); err == nil {
		t.Fatal("a NaN was accepted")
	}
}

// BenchmarkObserve measures the calibration statistics of a ReLU6 activation (1M values).
func BenchmarkObserve(b *testing.B) {
	x := reluLike(rand.New(rand.NewSource(1)), 1<<20)
	c := NewCalibrator([]string{"t"})
	b.SetBytes(int64(len(x) * 4))
	for b.Loop() {
		if err := c.Observe("t", x); err != nil {
			b.Fatal(err)
		}
	}
}
