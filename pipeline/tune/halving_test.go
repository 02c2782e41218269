package tune

import "testing"

func TestHalvingRungs(t *testing.T) {
	h := Halving{Eta: 3, MinEpochs: 2}
	var rungs []int
	for e := 0; e <= 20; e++ {
		if h.IsRung(e) {
			rungs = append(rungs, e)
		}
	}
	if len(rungs) != 3 || rungs[0] != 2 || rungs[1] != 6 || rungs[2] != 18 {
		t.Errorf("rungs %v, want [2 6 18]", rungs)
	}
	if (Halving{Eta: 1, MinEpochs: 2}).IsRung(2) {
		t.Error("eta 1 should disable halving")
	}
}

func TestHalvingPromote(t *testing.T) {
	h := Halving{Eta: 3, MinEpochs: 1}
	for _, c := range []struct {
		others []float64
		score  float64
		want   bool
	}{
		{nil, 0.1, true},                                 // alone
		{[]float64{0.9}, 0.1, true},                      // 2 < eta: too few to judge
		{[]float64{0.9, 0.8}, 0.1, false},                // 3 trials: only the best goes on
		{[]float64{0.9, 0.8}, 0.95, true},                // the best
		{[]float64{0.9, 0.8, 0.7, 0.6, 0.5}, 0.85, true}, // 6 trials: the top 2 go on
		{[]float64{0.9, 0.8, 0.7, 0.6, 0.5}, 0.75, false},
	} {
		if got := h.Promote(c.others, c.score); got != c.want {
			t.Errorf("Promote(%v, %g) = %v, want %v", c.others, c.score, got, c.want)
		}
	}
	if s, ok := RungScore([]float64{0.3, 0.5, 0.4, 0.2}, 2); !ok || s != 0.5 {
		t.Errorf("RungScore = %g %v, want the best up to epoch 2, 0.5", s, ok)
	}
	if s, ok := RungScore([]float64{0.9, 0.5, 0.4, 0.2}, 3); !ok || s != 0.5 {
		t.Errorf("RungScore = %g %v, want the best of epochs 1-3, 0.5 (epoch 0 left out)", s, ok)
	}
	if _, ok := RungScore([]float64{0.3}, 1); ok {
		t.Error("RungScore past the last epoch should be false")
	}
}
