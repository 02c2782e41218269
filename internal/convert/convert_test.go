package convert

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The conversions give Go's own conversions bit for bit, on lengths around the vector widths
// and the cgo threshold, with values that round (ties included), overflow float32, are
// subnormal in float32, infinite or NaN.
func TestConversions(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	special := []float64{0, math.Copysign(0, -1), 1 + 0x1p-24, 1 + 3*0x1p-24, 1e39, -1e39, 1e-40,
		math.Inf(1), math.Inf(-1), math.NaN(), math.MaxFloat32, math.SmallestNonzeroFloat32 / 2}
	for _, n := range []int{0, 1, 7, 8, 9, 255, 256, 257, 263, 4099} {
		src := make([]float64, n)
		for i := range src {
			src[i] = r.NormFloat64() * math.Pow(10, float64(r.IntN(20)-10))
			if i%5 == 0 {
				src[i] = special[(i/5)%len(special)]
			}
		}
		got := make([]float32, n+1)
		got[n] = 42 // beyond src: untouched
		F64ToF32(got, src)
		for i, v := range src {
			if w := float32(v); math.Float32bits(got[i]) != math.Float32bits(w) && !(w != w && got[i] != got[i]) {
				t.Fatalf("n=%d: F64ToF32 [%d] of %v = %v, want %v", n, i, v, got[i], w)
			}
		}
		if got[n] != 42 {
			t.Fatalf("n=%d: F64ToF32 wrote past the source's length", n)
		}
		back := make([]float64, n)
		F32ToF64(back, got[:n])
		for i, v := range got[:n] {
			if w := float64(v); math.Float64bits(back[i]) != math.Float64bits(w) && !(w != w && back[i] != back[i]) {
				t.Fatalf("n=%d: F32ToF64 [%d] of %v = %v, want %v", n, i, v, back[i], w)
			}
		}
	}
}

func BenchmarkF64ToF32(b *testing.B) {
	src, dst := make([]float64, 655360), make([]float32, 655360)
	b.SetBytes(int64(len(src)) * 12)
	for b.Loop() {
		F64ToF32(dst, src)
	}
}
