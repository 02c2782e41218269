package rowops

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

func TestGatherMeanCenter(t *testing.T) {
	x := []float32{1, 2, 3, 4, 5, 6} // 3 rows of 2
	if got := Gather(x, 2, []int{2, 0, 2}); !slices.Equal(got, []float32{5, 6, 1, 2, 5, 6}) {
		t.Errorf("Gather = %v", got)
	}
	if got := Mean([]float32{1, 2, 3}, []float32{3, 3, -3}); !slices.Equal(got, []float32{2, 2.5, 0}) {
		t.Errorf("Mean = %v", got)
	}
	if got := ColumnMean(x, 2); !slices.Equal(got, []float64{3, 4}) {
		t.Errorf("ColumnMean = %v, want [3 4]", got)
	}
	if got := ColumnMean([]float32{}, 3); !slices.Equal(got, []float64{0, 0, 0}) {
		t.Errorf("ColumnMean of no rows = %v", got)
	}
	c := slices.Clone(x)
	Center(c, []float32{3, 4})
	if !slices.Equal(c, []float32{-2, -2, 0, 0, 2, 2}) {
		t.Errorf("Center = %v", c)
	}
}

func TestMirror(t *testing.T) {
	// Two 1x2x3 "images": each row of width 3 reversed.
	src := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	got := Mirror(nil, src, 3)
	if want := []float32{3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10}; !slices.Equal(got, want) {
		t.Errorf("Mirror = %v, want %v", got, want)
	}
	buf := make([]float32, 0, 64)
	back := Mirror(buf, got, 3)
	if !slices.Equal(back, src) || &back[0] != &buf[:1][0] {
		t.Errorf("Mirror twice = %v (want the source, in dst's memory)", back)
	}
}

func TestL2Normalize(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n, d = 7, 300
	x := make([]float32, n*d)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * 1e3)
	}
	clear(x[2*d : 3*d]) // a zero row stays zero
	orig := slices.Clone(x)
	L2Normalize(x, d)
	for i := range n {
		row := x[i*d : (i+1)*d]
		s := 0.0
		for _, v := range row {
			s += float64(v) * float64(v)
		}
		if i == 2 {
			if s != 0 {
				t.Errorf("zero row became %v", row[:3])
			}
			continue
		}
		if math.Abs(math.Sqrt(s)-1) > 1e-6 {
			t.Errorf("row %d has norm %v", i, math.Sqrt(s))
		}
		// Exactly the formula the head's feature transform always used.
		o := orig[i*d : (i+1)*d]
		s = 0
		for _, v := range o {
			s += float64(v) * float64(v)
		}
		inv := float32(1 / math.Sqrt(s))
		for j := range o {
			if row[j] != o[j]*inv {
				t.Fatalf("row %d col %d: %v, want %v", i, j, row[j], o[j]*inv)
			}
		}
	}
	y := []float64{3, 4, 0, 0}
	ScaleNorm(y, 2, 10)
	if !slices.Equal(y, []float64{6, 8, 0, 0}) {
		t.Errorf("ScaleNorm to 10 = %v", y)
	}
	if InvNorm([]float32{3, 4}) != 0.2 || InvNorm([]float32{0, 0}) != 0 {
		t.Errorf("InvNorm = %v, %v", InvNorm([]float32{3, 4}), InvNorm([]float32{0, 0}))
	}
}

func TestShapePanics(t *testing.T) {
	for name, f := range map[string]func(){
		"L2Normalize": func() { L2Normalize(make([]float32, 5), 2) },
		"Mean":        func() { Mean(make([]float32, 2), make([]float32, 3)) },
		"Mirror":      func() { Mirror(nil, make([]float32, 5), 3) },
		"TopK":        func() { NewTopK[int](0) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s with a wrong shape did not panic", name)
				}
			}()
			f()
		}()
	}
}

// TestTopK against sorting all candidates, with many tied distances, k below, at and above the
// number of candidates, and a TopK reused through Reset.
func TestTopK(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	top := NewTopK[int32](1)
	for trial := range 200 {
		n := rng.IntN(60)
		k := 1 + rng.IntN(20)
		dist := make([]float64, n)
		for i := range dist {
			dist[i] = float64(rng.IntN(8)) // ties
		}
		order := rng.Perm(n) // offered in any order
		top.Reset(k)
		for _, i := range order {
			top.Push(dist[i], int32(i))
		}
		want := make([]int, n)
		for i := range want {
			want[i] = i
		}
		sort.SliceStable(want, func(a, b int) bool { return dist[want[a]] < dist[want[b]] })
		want = want[:min(k, n)]
		if top.Len() != len(want) {
			t.Fatalf("trial %d: kept %d, want %d", trial, top.Len(), len(want))
		}
		gd, gi := top.Sorted()
		for r := range want {
			if int(gi[r]) != want[r] || gd[r] != dist[want[r]] {
				t.Fatalf("trial %d (n %d, k %d): rank %d is (%v, %d), want (%v, %d)", trial, n, k, r, gd[r], gi[r], dist[want[r]], want[r])
			}
		}
	}
}
