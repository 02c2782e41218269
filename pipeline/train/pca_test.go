package train

import (
	"math"
	"math/rand"
	"testing"
)

func TestPCARecoversDominantDirections(t *testing.T) {
	// Data spread mostly along e1 (std 5), then e2 (std 2), little elsewhere, shifted by a mean.
	rng := rand.New(rand.NewSource(3))
	n, d := 2000, 6
	x := make([]float32, n*d)
	for i := 0; i < n; i++ {
		for j := 0; j < d; j++ {
			s := 0.1
			switch j {
			case 1:
				s = 5
			case 4:
				s = 2
			}
			x[i*d+j] = float32(rng.NormFloat64()*s + float64(j))
		}
	}
	comp, mean, err := PCA(x, n, d, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	for j := 0; j < d; j++ {
		if math.Abs(mean[j]-float64(j)) > 0.3 {
			t.Fatalf("mean[%d] = %g", j, mean[j])
		}
	}
	if math.Abs(comp[1]) < 0.999 || math.Abs(comp[d+4]) < 0.99 {
		t.Fatalf("components not aligned with e1, e4: %v", comp)
	}
	if comp[1] < 0 || comp[d+4] < 0 {
		t.Fatal("sign convention: largest entry must be positive")
	}
	if _, _, err := PCA(x, n, d, 7, true); err == nil {
		t.Fatal("k > d accepted")
	}
}

func TestPCAAboutOrigin(t *testing.T) {
	// Points spread a little along e0 around a large offset along e2: centered PCA finds e0, PCA
	// about the origin finds the mean direction e2 first.
	rng := rand.New(rand.NewSource(4))
	n, d := 500, 3
	x := make([]float32, n*d)
	for i := 0; i < n; i++ {
		x[i*d] = float32(rng.NormFloat64())
		x[i*d+2] = 10
	}
	c, _, _ := PCA(x, n, d, 1, true)
	u, mean, _ := PCA(x, n, d, 1, false)
	if math.Abs(c[0]) < 0.999 || math.Abs(u[2]) < 0.99 || mean[2] != 0 {
		t.Fatalf("centered %v, about origin %v (mean %v)", c, u, mean)
	}
}

// BenchmarkPCA is the PCA start of the default head: 2400 x 1280 features to 512 components.
func BenchmarkPCA(b *testing.B) {
	rng := rand.New(rand.NewSource(1))
	n, d := 2400, 1280
	x := make([]float32, n*d)
	for i := range x {
		x[i] = float32(rng.ExpFloat64())
	}
	for i := 0; i < b.N; i++ {
		if _, _, err := PCA(x, n, d, 512, false); err != nil {
			b.Fatal(err)
		}
	}
}
