package head

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// TestStepLossInputGradFiniteDifferences checks dLoss/dx of StepLossInputGrad against central
// finite differences of the loss in x (float64 head; error <= 1e-5 relative to max(|fd|, 0.01)), for the Group Loss
// and a metric loss, with and without a hidden layer. Inputs are rounded to float32 by the API,
// so the differences use a step that float32 represents exactly (2^-12) on inputs that are
// multiples of 2^-10. It also checks that the Param Grads equal StepLoss's.
func TestStepLossInputGradFiniteDifferences(t *testing.T) {
	losses := []LossConfig{
		{Kind: LossGroup, Group: GroupLoss{Temperature: 3, Iterations: 2, Scaling: 1, AnchorsPerClass: 1}},
		DefaultLossConfig(LossContrastive),
	}
	for _, hidden := range [][]int{nil, {6}} {
		for _, lc := range losses {
			t.Run(fmt.Sprintf("hidden%v/%s", hidden, lc.kind()), func(t *testing.T) {
				rng := rand.New(rand.NewSource(5))
				h, err := New(Config{In: 7, Emb: 4, Classes: 3, Hidden: hidden, DType: Float64}, rng)
				if err != nil {
					t.Fatal(err)
				}
				n := 9
				x, labels := randBatch(rng, n, 7, 3)
				for i, v := range x {
					x[i] = float32(math.Round(float64(v)*1024) / 1024)
				}
				res, dx, err := h.StepLossInputGrad(x, n, labels, nil, lc)
				if err != nil {
					t.Fatal(err)
				}
				if len(dx) != len(x) {
					t.Fatalf("input gradient has %d values, want %d", len(dx), len(x))
				}
				grads := map[string][]float64{}
				for _, p := range h.Params() {
					grads[p.Name] = append([]float64(nil), p.Grad...)
				}
				ref, err := h.StepLoss(x, n, labels, nil, lc)
				if err != nil {
					t.Fatal(err)
				}
				if ref != res {
					t.Fatalf("StepLossInputGrad result %+v, StepLoss %+v", res, ref)
				}
				for _, p := range h.Params() {
					for i, g := range p.Grad {
						if g != grads[p.Name][i] {
							t.Fatalf("Grad of %s[%d]: %g with the input gradient, %g without", p.Name, i, grads[p.Name][i], g)
						}
					}
				}
				const eps = 1.0 / 4096
				worst, nonzero := 0.0, 0
				for i := range x {
					v := x[i]
					x[i] = v + eps
					up, err := h.StepLoss(x, n, labels, nil, lc)
					if err != nil {
						t.Fatal(err)
					}
					x[i] = v - eps
					down, err := h.StepLoss(x, n, labels, nil, lc)
					if err != nil {
						t.Fatal(err)
					}
					x[i] = v
					fd := (up.Loss - down.Loss) / (2 * eps)
					// Central differences are exact to O(eps²·|f'''|): compare with a floor.
					e := math.Abs(float64(dx[i])-fd) / math.Max(math.Abs(fd), 1e-2)
					worst = math.Max(worst, e)
					if e > 1e-5 {
						t.Errorf("d loss/d x[%d] = %.9g, finite difference %.9g", i, dx[i], fd)
					}
					if dx[i] != 0 {
						nonzero++
					}
				}
				if nonzero < len(x)/2 {
					t.Errorf("only %d of %d input gradient entries are non-zero", nonzero, len(x))
				}
				t.Logf("loss %.6g; worst input-gradient error %.3g over %d entries", res.Loss, worst, len(x))
			})
		}
	}
}

// In float32 the input gradient matches the float64 head's to float32 precision.
func TestStepLossInputGradFloat32(t *testing.T) {
	rng := rand.New(rand.NewSource(8))
	h64, err := New(Config{In: 40, Emb: 8, Classes: 4, DType: Float64}, rand.New(rand.NewSource(1)))
	if err != nil {
		t.Fatal(err)
	}
	h32, err := New(Config{In: 40, Emb: 8, Classes: 4, DType: Float32}, rand.New(rand.NewSource(1)))
	if err != nil {
		t.Fatal(err)
	}
	n := 12
	x, labels := randBatch(rng, n, 40, 4)
	lc := DefaultLossConfig(LossGroup)
	_, d64, err := h64.StepLossInputGrad(x, n, labels, nil, lc)
	if err != nil {
		t.Fatal(err)
	}
	_, d32, err := h32.StepLossInputGrad(x, n, labels, nil, lc)
	if err != nil {
		t.Fatal(err)
	}
	worst, scale := 0.0, 0.0
	for i := range d64 {
		worst = math.Max(worst, math.Abs(float64(d32[i]-d64[i])))
		scale = math.Max(scale, math.Abs(float64(d64[i])))
	}
	if scale == 0 || worst > 1e-4*scale {
		t.Fatalf("float32 vs float64 input gradient: max error %.3g of max %.3g", worst, scale)
	}
	t.Logf("float32 vs float64 input gradient: max error %.2g (relative %.2g)", worst, worst/scale)
	if _, _, err := h32.StepLossInputGrad(x[:40], 1, labels[:1], nil, lc); err == nil {
		t.Fatal("batch of 1 accepted")
	}
}
