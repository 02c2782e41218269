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
	comp, mean, err := PCA(x, n, d, 2)
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
	if _, _, err := PCA(x, n, d, 7); err == nil {
		t.Fatal("k > d accepted")
	}
}
