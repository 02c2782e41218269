package head

import (
	"errors"
	"math"
	"math/rand"
	"testing"
)

func randBatch(rng *rand.Rand, n, in, classes int) ([]float32, []int) {
	x := make([]float32, n*in)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	labels := make([]int, n)
	for i := range labels {
		labels[i] = (i / 3) % classes // groups of 3 samples per class
	}
	return x, labels
}

// forward computes embeddings and logits of x in float64 with plain loops (the test oracle).
func forward(h *Head, x []float32, n int) (z, logits [][]float64) {
	a := make([][]float64, n)
	for i := range a {
		a[i] = make([]float64, h.cfg.In)
		for j := range a[i] {
			a[i][j] = float64(x[i*h.cfg.In+j])
		}
	}
	lin := func(l layer, a [][]float64) [][]float64 {
		out := make([][]float64, len(a))
		for i := range a {
			out[i] = make([]float64, l.out)
			for o := 0; o < l.out; o++ {
				s := l.b.Value[o]
				for k := 0; k < l.in; k++ {
					s += a[i][k] * l.w.Value[o*l.in+k]
				}
				if l.relu && s < 0 {
					s = 0
				}
				out[i][o] = s
			}
		}
		return out
	}
	for _, l := range h.layers {
		a = lin(l, a)
	}
	return a, lin(h.cls, a)
}

func TestNewShapesAndInit(t *testing.T) {
	h, err := New(Config{In: 7, Emb: 5, Classes: 3, Hidden: []int{4}}, rand.New(rand.NewSource(1)))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name  string
		shape []int
		fanIn int
	}{{"hidden.0.weight", []int{4, 7}, 7}, {"hidden.0.bias", []int{4}, 7}, {"emb.weight", []int{5, 4}, 4},
		{"emb.bias", []int{5}, 4}, {"cls.weight", []int{3, 5}, 5}, {"cls.bias", []int{3}, 5}}
	ps := h.Params()
	if len(ps) != len(want) {
		t.Fatalf("%d params, want %d", len(ps), len(want))
	}
	for i, w := range want {
		p := ps[i]
		if p.Name != w.name || len(p.Shape) != len(w.shape) || len(p.Value) != len(p.Grad) {
			t.Fatalf("param %d = %q %v, want %q %v", i, p.Name, p.Shape, w.name, w.shape)
		}
		size := 1
		for k, s := range w.shape {
			if p.Shape[k] != s {
				t.Fatalf("param %q shape %v, want %v", p.Name, p.Shape, w.shape)
			}
			size *= s
		}
		if len(p.Value) != size {
			t.Fatalf("param %q has %d values, want %d", p.Name, len(p.Value), size)
		}
		bound := 1 / math.Sqrt(float64(w.fanIn))
		nonzero := false
		for _, v := range p.Value {
			if math.Abs(v) > bound {
				t.Fatalf("param %q value %g outside ±%g", p.Name, v, bound)
			}
			nonzero = nonzero || v != 0
		}
		if !nonzero {
			t.Errorf("param %q is all zero", p.Name)
		}
	}
	if err := h.SetParam("emb.bias", []float64{1, 2, 3, 4, 5}); err != nil || ps[3].Value[4] != 5 {
		t.Errorf("SetParam emb.bias: err %v, value %v", err, ps[3].Value)
	}
	if err := h.SetParam("emb.bias", []float64{1}); err == nil {
		t.Error("SetParam with a wrong length: want an error")
	}
	if err := h.SetParam("nope", nil); err == nil {
		t.Error("SetParam of an unknown name: want an error")
	}
	for _, c := range []Config{{In: 1, Emb: 4, Classes: 3}, {In: 4, Emb: 4, Classes: 3, Hidden: []int{0}}, {In: 4, Emb: 4, Classes: 3, DType: 7}} {
		if _, err := New(c, rand.New(rand.NewSource(1))); err == nil {
			t.Errorf("New(%+v): want an error", c)
		}
	}
}

// Step's loss equals EvalLoss on the embeddings and logits of an independent float64 forward pass,
// and Embed matches that forward pass.
func TestStepMatchesEvalLossAndEmbed(t *testing.T) {
	for _, hidden := range [][]int{nil, {6}} {
		rng := rand.New(rand.NewSource(2))
		h, err := New(Config{In: 9, Emb: 5, Classes: 4, Hidden: hidden, DType: Float64}, rng)
		if err != nil {
			t.Fatal(err)
		}
		n := 12
		x, labels := randBatch(rng, n, 9, 4)
		gl := GroupLoss{Temperature: 2, Iterations: 2, Scaling: 0.7, AnchorsPerClass: 1}
		res, err := h.Step(x, n, labels, nil, gl)
		if err != nil {
			t.Fatal(err)
		}
		z, logits := forward(h, x, n)
		want, err := EvalLoss(gl, z, logits, labels, nil, Float64)
		if err != nil {
			t.Fatal(err)
		}
		if relErr(res.Loss, want.Loss) > 1e-12 || relErr(res.NLL, want.NLL) > 1e-12 || relErr(res.CE, want.CE) > 1e-12 {
			t.Errorf("hidden %v: Step %+v, EvalLoss loss %g nll %g ce %g", hidden, res, want.Loss, want.NLL, want.CE)
		}
		emb := make([]float32, n*5)
		h.Embed(x, n, emb)
		for i := range z {
			for j := range z[i] {
				if d := math.Abs(float64(emb[i*5+j]) - z[i][j]); d > 1e-6*math.Max(1, math.Abs(z[i][j])) {
					t.Fatalf("hidden %v: Embed[%d][%d] = %g, want %g", hidden, i, j, emb[i*5+j], z[i][j])
				}
			}
		}
	}
}

// Step's weight gradients match central finite differences of its loss (float64).
func TestStepGradientFiniteDifferences(t *testing.T) {
	for _, hidden := range [][]int{nil, {6}} {
		rng := rand.New(rand.NewSource(3))
		h, err := New(Config{In: 6, Emb: 4, Classes: 3, Hidden: hidden, DType: Float64}, rng)
		if err != nil {
			t.Fatal(err)
		}
		n := 9
		x, labels := randBatch(rng, n, 6, 3)
		gl := GroupLoss{Temperature: 3, Iterations: 2, Scaling: 1, AnchorsPerClass: 1}
		if _, err := h.Step(x, n, labels, nil, gl); err != nil {
			t.Fatal(err)
		}
		grads := map[string][]float64{}
		for _, p := range h.Params() {
			grads[p.Name] = append([]float64(nil), p.Grad...)
		}
		const eps = 1e-6
		worst := 0.0
		for _, p := range h.Params() {
			for i := range p.Value {
				v := p.Value[i]
				p.Value[i] = v + eps
				up, err := h.Step(x, n, labels, nil, gl)
				if err != nil {
					t.Fatal(err)
				}
				p.Value[i] = v - eps
				down, err := h.Step(x, n, labels, nil, gl)
				if err != nil {
					t.Fatal(err)
				}
				p.Value[i] = v
				fd := (up.Loss - down.Loss) / (2 * eps)
				e := relErr(grads[p.Name][i], fd)
				worst = math.Max(worst, e)
				if e > 1e-6 {
					t.Errorf("hidden %v: d loss/d %s[%d] = %.9g, finite difference %.9g", hidden, p.Name, i, grads[p.Name][i], fd)
				}
			}
		}
		t.Logf("hidden %v: worst gradient error %.3g", hidden, worst)
	}
}

// Graphs are cached per batch size; results do not depend on what ran before.
func TestStepCacheAndFloat32(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	h64, err := New(Config{In: 8, Emb: 6, Classes: 4, DType: Float64}, rng)
	if err != nil {
		t.Fatal(err)
	}
	h32, _ := New(Config{In: 8, Emb: 6, Classes: 4, DType: Float32}, rng)
	for i, p := range h64.Params() {
		if err := h32.SetParam(p.Name, p.Value); err != nil {
			t.Fatal(err)
		}
		_ = i
	}
	gl := DefaultGroupLoss()
	xa, la := randBatch(rng, 12, 8, 4)
	xb, lb := randBatch(rng, 6, 8, 4)
	first, err := h64.Step(xa, 12, la, nil, gl)
	if err != nil {
		t.Fatal(err)
	}
	g1 := append([]float64(nil), h64.Params()[0].Grad...)
	if _, err := h64.Step(xb, 6, lb, nil, gl); err != nil {
		t.Fatal(err)
	}
	again, err := h64.Step(xa, 12, la, nil, gl)
	if err != nil {
		t.Fatal(err)
	}
	if first != again {
		t.Errorf("same batch after another size: %+v then %+v", first, again)
	}
	for i, g := range h64.Params()[0].Grad {
		if g != g1[i] {
			t.Fatalf("gradient %d changed: %g then %g", i, g1[i], g)
		}
	}
	r32, err := h32.Step(xa, 12, la, nil, gl)
	if err != nil {
		t.Fatal(err)
	}
	if relErr(r32.Loss, first.Loss) > 1e-5 {
		t.Errorf("float32 loss %g, float64 %g", r32.Loss, first.Loss)
	}
	for k, p := range h32.Params() {
		for i, g := range p.Grad {
			if relErr(g, h64.Params()[k].Grad[i]) > 1e-4 {
				t.Fatalf("float32 gradient of %s[%d] = %g, float64 %g", p.Name, i, g, h64.Params()[k].Grad[i])
			}
		}
	}
}

// Degenerate batches give a finite loss and gradients through Step.
func TestStepDegenerate(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	for _, dt := range []DType{Float64, Float32} {
		h, err := New(Config{In: 5, Emb: 4, Classes: 3, DType: dt}, rng)
		if err != nil {
			t.Fatal(err)
		}
		n := 6
		x, _ := randBatch(rng, n, 5, 3)
		same := make([]float32, n*5)
		for i := range same {
			same[i] = x[i%5]
		}
		check := func(name string, x []float32, labels []int) {
			t.Helper()
			r, err := h.Step(x, n, labels, nil, DefaultGroupLoss())
			if err != nil {
				t.Fatalf("%s/%s: %v", dt, name, err)
			}
			if !(r.Loss > 0) || math.IsInf(r.Loss, 0) {
				t.Errorf("%s/%s: loss %g", dt, name, r.Loss)
			}
			for _, p := range h.Params() {
				if !finite(p.Grad) {
					t.Fatalf("%s/%s: gradient of %s not finite", dt, name, p.Name)
				}
			}
		}
		check("one class", x, []int{2, 2, 2, 2, 2, 2})
		check("identical rows", same, []int{0, 1, 2, 0, 1, 2})
		// Zero embedding weights and a constant bias: every embedding row has zero variance.
		if err := h.SetParam("emb.weight", make([]float64, 4*5)); err != nil {
			t.Fatal(err)
		}
		if err := h.SetParam("emb.bias", []float64{0.5, 0.5, 0.5, 0.5}); err != nil {
			t.Fatal(err)
		}
		check("zero-variance embeddings", x, []int{0, 1, 2, 0, 1, 2})
	}
}

func TestStepErrors(t *testing.T) {
	h, err := New(Config{In: 4, Emb: 3, Classes: 3, DType: Float64}, rand.New(rand.NewSource(6)))
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 4*4)
	for i := range x {
		x[i] = float32(i % 5)
	}
	gl := DefaultGroupLoss()
	if _, err := h.Step(x, 4, []int{0, 1, 2, 3}, nil, gl); err == nil {
		t.Error("label >= Classes: want an error")
	}
	if _, err := h.Step(x[:15], 4, []int{0, 1, 2, 0}, nil, gl); err == nil {
		t.Error("short x: want an error")
	}
	if _, err := h.Step(x, 4, []int{0, 1, 2, 0}, []bool{true}, gl); err == nil {
		t.Error("short anchors: want an error")
	}
	if _, err := h.Step(x, 4, []int{0, 1, 2, 0}, nil, GroupLoss{}); err == nil {
		t.Error("invalid group loss: want an error")
	}
	x[3] = float32(math.Inf(1))
	if _, err := h.Step(x, 4, []int{0, 1, 2, 0}, nil, gl); !errors.Is(err, ErrNonFinite) {
		t.Errorf("infinite feature: err = %v, want ErrNonFinite", err)
	}
}

// BenchmarkStep measures one training step at the CUB-100 protocol's sizes: 1280-d features,
// 512-d embeddings, 50 classes, a batch of 6 classes x 9 samples, float32.
func BenchmarkStep(b *testing.B) {
	rng := rand.New(rand.NewSource(7))
	h, err := New(Config{In: 1280, Emb: 512, Classes: 50, DType: Float32}, rng)
	if err != nil {
		b.Fatal(err)
	}
	n := 54
	x, _ := randBatch(rng, n, 1280, 50)
	labels := make([]int, n)
	for i := range labels {
		labels[i] = 7 * (i / 9)
	}
	gl := DefaultGroupLoss()
	if _, err := h.Step(x, n, labels, nil, gl); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	defer reportCPU(b)()
	for i := 0; i < b.N; i++ {
		if _, err := h.Step(x, n, labels, nil, gl); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEmbed measures embedding the CUB-100 test split (2953 rows of 1280-d features) into
// 512-d embeddings.
func BenchmarkEmbed(b *testing.B) {
	rng := rand.New(rand.NewSource(9))
	h, err := New(Config{In: 1280, Emb: 512, Classes: 50}, rng)
	if err != nil {
		b.Fatal(err)
	}
	n := 2953
	x, _ := randBatch(rng, n, 1280, 50)
	out := make([]float32, n*512)
	b.ResetTimer()
	defer reportCPU(b)()
	for i := 0; i < b.N; i++ {
		h.Embed(x, n, out)
	}
}
