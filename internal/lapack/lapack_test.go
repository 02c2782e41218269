package lapack

import (
	"math"
	"math/rand"
	"testing"
)

// randomSym returns a d×d symmetric matrix XᵀX/n of random data with a few dominant directions
// (distinct eigenvalues), row-major.
func randomSym(d int, seed int64) []float64 {
	r := rand.New(rand.NewSource(seed))
	n := 3 * d
	x := make([]float64, n*d)
	for i := range x {
		x[i] = r.NormFloat64() * (1 + 4*float64((i%d)%3))
	}
	a := make([]float64, d*d)
	for i := 0; i < d; i++ {
		for j := 0; j <= i; j++ {
			s := 0.0
			for p := 0; p < n; p++ {
				s += x[p*d+i] * x[p*d+j]
			}
			a[i*d+j], a[j*d+i] = s/float64(n), s/float64(n)
		}
	}
	return a
}

// TestSymEigTop checks A v = λ v for the k returned pairs, unit norms, descending order, and the
// agreement of the build's solver with gonum's (the same eigenvalues; vectors up to sign).
func TestSymEigTop(t *testing.T) {
	for _, c := range []struct{ d, k int }{{1, 1}, {5, 2}, {40, 40}, {90, 17}} {
		a := randomSym(c.d, int64(c.d))
		vals, vecs, err := SymEigTop(append([]float64(nil), a...), c.d, c.k)
		if err != nil {
			t.Fatal(err)
		}
		gv, gvecs, err := symEigTopGonum(append([]float64(nil), a...), c.d, c.k)
		if err != nil {
			t.Fatal(err)
		}
		scale := math.Abs(gv[0])
		for r := 0; r < c.k; r++ {
			v := vecs[r*c.d : (r+1)*c.d]
			if r > 0 && vals[r] > vals[r-1] {
				t.Fatalf("d=%d: eigenvalues not descending: %v", c.d, vals)
			}
			if math.Abs(vals[r]-gv[r]) > 1e-10*scale {
				t.Fatalf("d=%d: eigenvalue %d = %v, gonum %v", c.d, r, vals[r], gv[r])
			}
			norm, dot := 0.0, 0.0
			for i := 0; i < c.d; i++ {
				av := 0.0
				for j := 0; j < c.d; j++ {
					av += a[i*c.d+j] * v[j]
				}
				if math.Abs(av-vals[r]*v[i]) > 1e-9*scale {
					t.Fatalf("d=%d: (A v - λ v)[%d] = %g for eigenvalue %d", c.d, i, av-vals[r]*v[i], r)
				}
				norm += v[i] * v[i]
				dot += v[i] * gvecs[r*c.d+i]
			}
			if math.Abs(norm-1) > 1e-10 || math.Abs(math.Abs(dot)-1) > 1e-8 {
				t.Fatalf("d=%d: vector %d has norm² %v and |cos| %v to gonum's", c.d, r, norm, math.Abs(dot))
			}
		}
	}
	if _, _, err := SymEigTop(make([]float64, 4), 2, 3); err == nil {
		t.Fatal("k > d accepted")
	}
}

// BenchmarkSymEigTop is the PCA start's decomposition: the top 512 of a 1280×1280 matrix.
func BenchmarkSymEigTop(b *testing.B) {
	a := randomSym(1280, 1)
	for b.Loop() {
		if _, _, err := SymEigTop(append([]float64(nil), a...), 1280, 512); err != nil {
			b.Fatal(err)
		}
	}
}
