package train

import (
	"fmt"
	"math"
	"testing"
)

// Reference values from torch.optim (PyTorch 1.13): minimizing f(w) = sum((w - c)^2)/2 from
// w0 = (1, -2, 0.5) with c = (0.3, 0.1, -0.4), lr 0.1, weight decay 0.01, 3 steps (gradients w - c).
// The expected values are recomputed here from the update equations written out by hand, step by
// step, so the test exercises the bias corrections and the RAdam warm-up branch (rho <= 5 for the
// first steps, which makes RAdam take plain momentum steps).
func TestAdamMatchesHandComputation(t *testing.T) {
	c := []float64{0.3, 0.1, -0.4}
	for _, kind := range []OptimizerKind{OptAdam, OptAdamW, OptRAdam} {
		opt, err := NewOptimizer(kind, 0.01)
		if err != nil {
			t.Fatal(err)
		}
		w := []float64{1, -2, 0.5}
		g := make([]float64, 3)
		// hand-rolled reference, one coordinate at a time
		ref := append([]float64(nil), w...)
		m := make([]float64, 3)
		v := make([]float64, 3)
		for step := 1; step <= 3; step++ {
			for i := range w {
				g[i] = w[i] - c[i]
			}
			opt.Step([]Tensor{{Name: "w", Value: w, Grad: g}}, 0.1)
			for i := range ref {
				gi := ref[i] - c[i]
				if kind == OptAdamW {
					ref[i] *= 1 - 0.1*0.01
				} else {
					gi += 0.01 * ref[i]
				}
				m[i] = 0.9*m[i] + 0.1*gi
				v[i] = 0.999*v[i] + 0.001*gi*gi
				mh := m[i] / (1 - math.Pow(0.9, float64(step)))
				vh := v[i] / (1 - math.Pow(0.999, float64(step)))
				if kind == OptRAdam {
					// rho_t = rho_inf - 2 t b2^t / (1 - b2^t) is below 5 for t <= 5: un-rectified step.
					ref[i] -= 0.1 * mh
				} else {
					ref[i] -= 0.1 * mh / (math.Sqrt(vh) + 1e-8)
				}
			}
			for i := range w {
				if math.Abs(w[i]-ref[i]) > 1e-12 {
					t.Fatalf("%s step %d: w[%d] = %.15g, want %.15g", kind, step, i, w[i], ref[i])
				}
			}
		}
	}
}

func TestRAdamRectifiedAfterWarmup(t *testing.T) {
	opt, _ := NewOptimizer(OptRAdam, 0)
	w := []float64{1}
	for step := 1; step <= 10; step++ {
		opt.Step([]Tensor{{Name: "w", Value: w, Grad: []float64{1}}}, 0.01)
	}
	// With a constant gradient of 1: m_hat = v_hat = 1 from the first step on. Steps 1-5 are plain
	// momentum steps of lr; steps 6-10 are lr * r_t with r_t < 1.
	rhoInf := 2/(1-0.999) - 1
	want := 1 - 5*0.01
	for s := 6.0; s <= 10; s++ {
		bc2 := 1 - math.Pow(0.999, s)
		rho := rhoInf - 2*s*math.Pow(0.999, s)/bc2
		r := math.Sqrt((rho - 4) * (rho - 2) * rhoInf / ((rhoInf - 4) * (rhoInf - 2) * rho))
		want -= 0.01 * r / (1 + 1e-8)
	}
	if math.Abs(w[0]-want) > 1e-12 {
		t.Fatalf("w = %.15g, want %.15g", w[0], want)
	}
}

func TestOptimizerStateRoundTrip(t *testing.T) {
	a, _ := NewOptimizer(OptAdam, 0)
	b, _ := NewOptimizer(OptAdam, 0)
	w1, w2 := []float64{1, 2}, []float64{1, 2}
	a.Step([]Tensor{{Name: "w", Value: w1, Grad: []float64{0.5, -1}}}, 0.1)
	b.Step([]Tensor{{Name: "w", Value: w2, Grad: []float64{0.5, -1}}}, 0.1)
	c, _ := NewOptimizer(OptAdam, 0)
	if err := c.SetState(a.State()); err != nil {
		t.Fatal(err)
	}
	w3 := append([]float64(nil), w1...)
	c.Step([]Tensor{{Name: "w", Value: w3, Grad: []float64{0.2, 0.3}}}, 0.1)
	b.Step([]Tensor{{Name: "w", Value: w2, Grad: []float64{0.2, 0.3}}}, 0.1)
	for i := range w2 {
		if w2[i] != w3[i] {
			t.Fatalf("restored optimizer diverged: %v vs %v", w3, w2)
		}
	}
	if _, err := NewOptimizer("sgd", 0); err == nil {
		t.Fatal("unknown optimizer accepted")
	}
}

// BenchmarkOptimizerStep: one RAdam step over the head's parameters at the default sizes (1280 ->
// 512 embedding layer and a 512 -> 50 classifier, with biases), past the warm-up steps so that
// the rectified update runs.
func BenchmarkOptimizerStep(b *testing.B) {
	sizes := []int{1280 * 512, 512, 512 * 50, 50}
	var params []Tensor
	for i, n := range sizes {
		p := Tensor{Name: fmt.Sprint(i), Value: make([]float64, n), Grad: make([]float64, n)}
		for j := range p.Grad {
			p.Value[j], p.Grad[j] = float64(j%7)/7, float64(j%5-2)/10
		}
		params = append(params, p)
	}
	o, err := NewOptimizer(OptRAdam, 6e-6)
	if err != nil {
		b.Fatal(err)
	}
	for range 10 {
		o.Step(params, 1e-4)
	}
	b.ResetTimer()
	for range b.N {
		o.Step(params, 1e-4)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(1280*512+512+512*50+50), "ns/param")
}

// TestAdamKernelMatchesGo: the vectorized kernel (adam.c where it is built) gives the same bits
// as the Go loop, over lengths that leave remainders of every vector width, with decay as a
// gradient term and as a weight scale.
func TestAdamKernelMatchesGo(t *testing.T) {
	for _, n := range []int{1, 3, 4, 7, 8, 9, 16, 1001} {
		for _, k := range []adamConsts{
			{b1: 0.9, b2: 0.999, c1: 0.1, c2: 0.001, gdecay: 6e-6, wscale: 1, step: 1.3e-4, isb: 31.6, eps: 1e-8},
			{b1: 0.9, b2: 0.999, c1: 0.1, c2: 0.001, gdecay: 0, wscale: 1 - 1e-7, step: 2e-3, isb: 1.02, eps: 1e-8},
		} {
			mk := func() (w, g, m, v []float64) {
				w, g, m, v = make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
				for i := range n {
					w[i], g[i] = math.Sin(float64(i)), math.Cos(float64(3*i))/(1+float64(i%5))
					m[i], v[i] = g[i]/3, g[i]*g[i]/(2+float64(i%3))
				}
				g[n/2] = 0 // and a zero moment
				v[n/2] = 0
				return
			}
			w1, g1, m1, v1 := mk()
			w2, g2, m2, v2 := mk()
			adamStepGo(w1, g1, m1, v1, k)
			adamKernel(w2, g2, m2, v2, k)
			for i := range n {
				if math.Float64bits(w1[i]) != math.Float64bits(w2[i]) || m1[i] != m2[i] || v1[i] != v2[i] {
					t.Fatalf("n %d, element %d: kernel w %v m %v v %v, Go %v %v %v", n, i, w2[i], m2[i], v2[i], w1[i], m1[i], v1[i])
				}
			}
		}
	}
}
