package head

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	gg "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// matTrunk is a test trunk: features (n, In) = x (n, k) · M (k, In), with M trainable.
type matTrunk struct {
	k, in   int
	m, grad []float64
}

func (t *matTrunk) InputShape() []int { return []int{t.k} }

func (t *matTrunk) Build(x *gg.Node) (*gg.Node, []TrunkParam, error) {
	v := tensor.New(tensor.WithShape(t.k, t.in), tensor.Of(x.Dtype()))
	m := gg.NewMatrix(x.Graph(), x.Dtype(), gg.WithShape(t.k, t.in), gg.WithName("M"), gg.WithValue(v))
	f, err := gg.Mul(x, m)
	return f, []TrunkParam{{Name: "M", Node: m, Value: t.m, Grad: t.grad}}, err
}

// TestStepTrunkIdentity: with M = I the trunk step equals StepLoss on the same features (loss
// and every head gradient), and M's gradient is then the features' gradient.
func TestStepTrunkIdentity(t *testing.T) {
	const in, n = 6, 9
	rng := rand.New(rand.NewSource(3))
	h, err := New(Config{In: in, Emb: 4, Classes: 3, DType: Float64}, rng)
	if err != nil {
		t.Fatal(err)
	}
	tr := &matTrunk{k: in, in: in, m: make([]float64, in*in), grad: make([]float64, in*in)}
	for i := 0; i < in; i++ {
		tr.m[i*in+i] = 1
	}
	x, labels := randBatch(rng, n, in, 3)
	lc := DefaultLossConfig(LossGroup)
	ref, err := h.StepLoss(x, n, labels, nil, lc)
	if err != nil {
		t.Fatal(err)
	}
	grads := map[string][]float64{}
	for _, p := range h.Params() {
		grads[p.Name] = append([]float64(nil), p.Grad...)
	}
	res, err := h.StepTrunk(tr, x, n, labels, nil, lc)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(res.Loss-ref.Loss) > 1e-12 {
		t.Fatalf("trunk step loss %.15g, StepLoss %.15g", res.Loss, ref.Loss)
	}
	for _, p := range h.Params() {
		for i, g := range p.Grad {
			if math.Abs(g-grads[p.Name][i]) > 1e-12 {
				t.Fatalf("Grad of %s[%d]: %g through the trunk, %g without", p.Name, i, g, grads[p.Name][i])
			}
		}
	}
	nonzero := 0
	for _, g := range tr.grad {
		if g != 0 {
			nonzero++
		}
	}
	if nonzero < len(tr.grad)/2 {
		t.Fatalf("only %d of %d trunk gradient entries are non-zero", nonzero, len(tr.grad))
	}
}

// TestStepTrunkFiniteDifferences checks the trunk parameter's gradient (which flows through the
// head's input layer: dx = g·W) against central finite differences of the loss (float64 head;
// error <= 1e-6 relative to max(|fd|, 0.01)), for the Group Loss and a metric loss, with and
// without a hidden layer.
func TestStepTrunkFiniteDifferences(t *testing.T) {
	losses := []LossConfig{
		{Kind: LossGroup, Group: GroupLoss{Temperature: 3, Iterations: 2, Scaling: 1, AnchorsPerClass: 1}},
		DefaultLossConfig(LossContrastive),
	}
	for _, hidden := range [][]int{nil, {6}} {
		for _, lc := range losses {
			t.Run(fmt.Sprintf("hidden%v/%s", hidden, lc.kind()), func(t *testing.T) {
				rng := rand.New(rand.NewSource(5))
				const k, in, n = 5, 7, 9
				h, err := New(Config{In: in, Emb: 4, Classes: 3, Hidden: hidden, DType: Float64}, rng)
				if err != nil {
					t.Fatal(err)
				}
				tr := &matTrunk{k: k, in: in, m: make([]float64, k*in), grad: make([]float64, k*in)}
				for i := range tr.m {
					tr.m[i] = rng.NormFloat64() / 2
				}
				x, labels := randBatch(rng, n, k, 3)
				res, err := h.StepTrunk(tr, x, n, labels, nil, lc)
				if err != nil {
					t.Fatal(err)
				}
				g := append([]float64(nil), tr.grad...)
				const eps = 1e-6
				worst := 0.0
				for i := range tr.m {
					v := tr.m[i]
					tr.m[i] = v + eps
					up, err := h.StepTrunk(tr, x, n, labels, nil, lc)
					if err != nil {
						t.Fatal(err)
					}
					tr.m[i] = v - eps
					down, err := h.StepTrunk(tr, x, n, labels, nil, lc)
					if err != nil {
						t.Fatal(err)
					}
					tr.m[i] = v
					fd := (up.Loss - down.Loss) / (2 * eps)
					e := math.Abs(g[i]-fd) / math.Max(math.Abs(fd), 1e-2)
					worst = math.Max(worst, e)
					if e > 1e-6 {
						t.Errorf("d loss/d M[%d] = %.9g, finite difference %.9g", i, g[i], fd)
					}
				}
				t.Logf("loss %.6g; worst trunk-gradient error %.3g over %d entries", res.Loss, worst, len(g))
			})
		}
	}
}

// TestStepTrunkErrors: a trunk whose output does not fit the head, and bad input sizes.
func TestStepTrunkErrors(t *testing.T) {
	h, err := New(Config{In: 6, Emb: 4, Classes: 3}, rand.New(rand.NewSource(1)))
	if err != nil {
		t.Fatal(err)
	}
	x, labels := randBatch(rand.New(rand.NewSource(2)), 4, 5, 3)
	tr := &matTrunk{k: 5, in: 7, m: make([]float64, 35), grad: make([]float64, 35)}
	if _, err := h.StepTrunk(tr, x, 4, labels, nil, DefaultLossConfig(LossGroup)); err == nil {
		t.Fatal("trunk output of 7 features accepted by a head of 6")
	}
	tr = &matTrunk{k: 5, in: 6, m: make([]float64, 30), grad: make([]float64, 30)}
	if _, err := h.StepTrunk(tr, x[:10], 4, labels, nil, DefaultLossConfig(LossGroup)); err == nil {
		t.Fatal("10 input values for 4 rows of 5 accepted")
	}
	if _, err := h.StepTrunk(tr, x, 4, labels, nil, DefaultLossConfig(LossGroup)); err != nil {
		t.Fatal(err)
	}
}
