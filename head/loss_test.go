package head

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gg "gorgonia.org/gorgonia"
)

// lossEval is a loss value and its gradients with respect to the embeddings (n, e), logits (n, c)
// and proxies (c, e) it was computed from (zero for inputs the loss does not use).
type lossEval struct {
	loss                             float64
	gradEmb, gradLogits, gradProxies [][]float64
}

// evalLossConfig computes loss lc of the given embeddings, logits and proxies through the same
// graph code StepLoss trains with (buildLossConfig), in dtype dt.
func evalLossConfig(t *testing.T, lc LossConfig, emb, logits, proxies [][]float64, labels []int, dt DType) (*lossEval, error) {
	t.Helper()
	var err error
	res, err := func() (res *lossEval, err error) {
		defer recoverErr(&err)
		if err := lc.Validate(); err != nil {
			return nil, err
		}
		n, e, c := len(emb), len(emb[0]), len(logits[0])
		g := gg.NewGraph()
		bi, err := newBatchInputs(g, dt, n, c)
		if err != nil {
			return nil, err
		}
		perClass := 0
		if lc.kind() == LossGroup {
			perClass = lc.Group.AnchorsPerClass
		}
		if err := bi.fill(labels, Anchors(labels, perClass)); err != nil {
			return nil, err
		}
		leaf := func(name string, m [][]float64, rows, cols int, transpose bool) *gg.Node {
			flat, err := flatten(m, cols, name)
			if err != nil {
				t.Fatal(err)
			}
			if len(m) != rows {
				t.Fatalf("%s: %d rows, want %d", name, len(m), rows)
			}
			if transpose {
				v := newDense(dt, cols, rows)
				setDataT(v, flat, rows, cols)
				return gg.NewMatrix(g, dt.tensor(), gg.WithShape(cols, rows), gg.WithName(name), gg.WithValue(v))
			}
			v := newDense(dt, rows, cols)
			setData(v, flat)
			return gg.NewMatrix(g, dt.tensor(), gg.WithShape(rows, cols), gg.WithName(name), gg.WithValue(v))
		}
		z := leaf("embeddings", emb, n, e, false)
		var wrt gg.Nodes
		if lc.kind() != LossSoftmax { // the softmax loss reaches the embeddings through the logits only
			wrt = append(wrt, z)
		}
		var lg, pt *gg.Node
		if lc.usesLogits() {
			lg = leaf("logits", logits, n, c, false)
			wrt = append(wrt, lg)
		}
		if lc.usesProxies() {
			pt = leaf("proxies_T", proxies, c, e, true)
			wrt = append(wrt, pt)
		}
		ln, err := buildLossConfig(z, lg, pt, bi, lc, dt)
		if err != nil {
			return nil, err
		}
		grads, err := gg.Grad(ln.loss, wrt...)
		if err != nil {
			return nil, err
		}
		vals := make([]gg.Value, 3+len(grads))
		var roots gg.Nodes
		for i, nd := range []*gg.Node{ln.loss, ln.nll, ln.ce} {
			if nd != nil {
				roots = append(roots, gg.Read(nd, &vals[i]))
			}
		}
		for i, gn := range grads {
			roots = append(roots, gg.Read(gn, &vals[3+i]))
		}
		vm := gg.NewTapeMachine(g.SubgraphRoots(roots...))
		defer vm.Close()
		if err := vm.RunAll(); err != nil {
			return nil, err
		}
		res = &lossEval{gradEmb: zeros(n, e), gradLogits: zeros(n, c), gradProxies: zeros(c, e)}
		k := 3
		if lc.kind() != LossSoftmax {
			res.gradEmb = readMatrix(vals[k], n, e)
			k++
		}
		var s [1]float64
		getData(s[:], vals[0])
		res.loss = s[0]
		if lg != nil {
			res.gradLogits = readMatrix(vals[k], n, c)
			k++
		}
		if pt != nil {
			gT := readMatrix(vals[k], e, c)
			for i := range res.gradProxies {
				for j := range res.gradProxies[i] {
					res.gradProxies[i][j] = gT[j][i]
				}
			}
		}
		return res, nil
	}()
	return res, err
}

func zeros(r, c int) [][]float64 {
	m := make([][]float64, r)
	for i := range m {
		m[i] = make([]float64, c)
	}
	return m
}

type lossGoldenCase struct {
	Description string      `json:"description"`
	Labels      []int       `json:"labels"`
	Embeddings  [][]float64 `json:"embeddings"`
	Logits      [][]float64 `json:"logits"`
	Proxies     [][]float64 `json:"proxies"`
	Config      struct {
		TripletMargin float64 `json:"triplet_margin"`
		PosMargin     float64 `json:"pos_margin"`
		NegMargin     float64 `json:"neg_margin"`
		ProxyAlpha    float64 `json:"proxy_alpha"`
		ProxyMargin   float64 `json:"proxy_margin"`
		MSAlpha       float64 `json:"ms_alpha"`
		MSBeta        float64 `json:"ms_beta"`
		MSBase        float64 `json:"ms_base"`
		MSMargin      float64 `json:"ms_margin"`
	} `json:"config"`
	Expected map[string]struct {
		Loss        float64     `json:"loss"`
		GradEmb     [][]float64 `json:"grad_embeddings"`
		GradLogits  [][]float64 `json:"grad_logits"`
		GradProxies [][]float64 `json:"grad_proxies"`
	} `json:"expected"`
}

// The baseline losses and their gradients match PyTorch (testdata/make_loss_golden.py, float64):
// relative error (to max(1, |want|)) within 1e-9 in float64 and 1e-4 in float32.
func TestLossGolden(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "loss_golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases []lossGoldenCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Cases) == 0 {
		t.Fatal("no golden cases")
	}
	for _, dt := range []struct {
		dt  DType
		tol float64
	}{{Float64, 1e-9}, {Float32, 1e-4}} {
		for _, c := range doc.Cases {
			for _, kind := range []LossKind{LossSoftmax, LossTriplet, LossContrastive, LossProxyAnchor, LossMultiSimilarity} {
				want, ok := c.Expected[string(kind)]
				if !ok {
					t.Fatalf("%s: no expected values for %q", c.Description, kind)
				}
				t.Run(fmt.Sprintf("%s/%s/%s", dt.dt, c.Description, kind), func(t *testing.T) {
					lc := LossConfig{Kind: kind, TripletMargin: c.Config.TripletMargin, PosMargin: c.Config.PosMargin,
						NegMargin: c.Config.NegMargin, ProxyAlpha: c.Config.ProxyAlpha, ProxyMargin: c.Config.ProxyMargin,
						MSAlpha: c.Config.MSAlpha, MSBeta: c.Config.MSBeta, MSBase: c.Config.MSBase, MSMargin: c.Config.MSMargin}
					r, err := evalLossConfig(t, lc, c.Embeddings, c.Logits, c.Proxies, c.Labels, dt.dt)
					if err != nil {
						t.Fatal(err)
					}
					errs := map[string]float64{
						"loss":         relErr(r.loss, want.Loss),
						"grad_emb":     maxErr(t, "grad_emb", r.gradEmb, want.GradEmb),
						"grad_logits":  maxErr(t, "grad_logits", r.gradLogits, want.GradLogits),
						"grad_proxies": maxErr(t, "grad_proxies", r.gradProxies, want.GradProxies),
					}
					for name, e := range errs {
						if e > dt.tol {
							t.Errorf("%s: relative error %.3g > %g", name, e, dt.tol)
						}
					}
					t.Logf("loss %.10g (want %.10g); worst error %.3g", r.loss, want.Loss, maxOf(errs))
				})
			}
		}
	}
}

// Small cases computed by hand: four unit vectors at 90° steps, classes {0, 1} = {(1,0), (0,1)},
// {(−1,0), (0,−1)}; same-class and adjacent distances are √2, opposite ones 2.
func TestLossHandCases(t *testing.T) {
	emb := [][]float64{{1, 0}, {0, 1}, {-1, 0}, {0, -1}}
	labels := []int{0, 0, 1, 1}
	logits := [][]float64{{0, 0, 0}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}}
	proxies := [][]float64{{1, 0}, {-1, 0}, {0, 3}}
	s2 := math.Sqrt2
	cases := []struct {
		name   string
		lc     LossConfig
		emb    [][]float64
		labels []int
		want   float64
	}{
		// Hardest positive √2, hardest negative √2 for every row: loss = margin.
		{"triplet", LossConfig{Kind: LossTriplet, TripletMargin: 0.2}, emb, labels, 0.2},
		{"triplet margin 0", LossConfig{Kind: LossTriplet}, emb, labels, 0},
		// Scaling an embedding does not change the normalized loss.
		{"triplet scaled rows", LossConfig{Kind: LossTriplet, TripletMargin: 0.2}, [][]float64{{5, 0}, {0, 0.1}, {-2, 0}, {0, -7}}, labels, 0.2},
		// Positive pairs: 4 ordered pairs at √2; negatives at √2 and 2 are beyond margin 1.
		{"contrastive", LossConfig{Kind: LossContrastive, NegMargin: 1}, emb, labels, s2},
		// Negative margin 1.5: the 4 ordered pairs at √2 give 1.5−√2 each, those at 2 give 0 (not counted).
		{"contrastive neg margin 1.5", LossConfig{Kind: LossContrastive, NegMargin: 1.5}, emb, labels, s2 + 1.5 - s2},
		// Positive margin 2: no positive term is non-zero, so that mean is 0.
		{"contrastive pos margin 2", LossConfig{Kind: LossContrastive, PosMargin: 2, NegMargin: 1.5}, emb, labels, 1.5 - s2},
		// Zero logits: log(classes).
		{"softmax", LossConfig{Kind: LossSoftmax}, emb, labels, math.Log(3)},
		// Proxies (1,0), (−1,0), (0,3); embeddings (1,0) of class 0 and (−1,0) of class 1, α 1, δ 0.1:
		// positive terms 2·log(1+e^{−0.9}) / 2 classes present; negative terms over 3 classes:
		// classes 0 and 1 see cos −1: log(1+e^{−0.9}) each, class 2 sees two cos 0: log(1+2e^{0.1}).
		{"proxy anchor", LossConfig{Kind: LossProxyAnchor, ProxyAlpha: 1, ProxyMargin: 0.1},
			[][]float64{{1, 0}, {-1, 0}}, []int{0, 1},
			math.Log1p(math.Exp(-0.9)) + (2*math.Log1p(math.Exp(-0.9))+math.Log1p(2*math.Exp(0.1)))/3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := evalLossConfig(t, c.lc, c.emb, logits[:len(c.emb)], proxies, c.labels, Float64)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(r.loss-c.want) > 1e-9 {
				t.Errorf("loss %.12g, want %.12g", r.loss, c.want)
			}
		})
	}
}

// Every loss's parameter gradients through StepLoss match central finite differences of its loss
// (float64), with and without a hidden layer; parameters a loss does not use get a zero gradient.
func TestStepLossGradientFiniteDifferences(t *testing.T) {
	kinds := []LossConfig{
		DefaultLossConfig(LossSoftmax),
		DefaultLossConfig(LossTriplet),
		{Kind: LossTriplet, TripletMargin: 1.5}, // most hinges active
		DefaultLossConfig(LossContrastive),
		{Kind: LossContrastive, PosMargin: 0.5, NegMargin: 1.3},
		DefaultLossConfig(LossProxyAnchor),
		{Kind: LossProxyAnchor, ProxyAlpha: 3, ProxyMargin: 0.3},
	}
	for _, hidden := range [][]int{nil, {6}} {
		for _, lc := range kinds {
			name := fmt.Sprintf("hidden%v/%s/%+v", hidden, lc.Kind, lc.key())
			t.Run(name, func(t *testing.T) {
				rng := rand.New(rand.NewSource(13))
				h, err := New(Config{In: 6, Emb: 4, Classes: 4, Hidden: hidden, DType: Float64}, rng)
				if err != nil {
					t.Fatal(err)
				}
				n := 10
				x, labels := randBatch(rng, n, 6, 4) // classes 0..3 of 3, 3, 3, 1 samples
				res, err := h.StepLoss(x, n, labels, nil, lc)
				if err != nil {
					t.Fatal(err)
				}
				if !(res.Loss > 0) {
					t.Fatalf("loss %g, want > 0 for a non-trivial check", res.Loss)
				}
				grads := map[string][]float64{}
				for _, p := range h.Params() {
					grads[p.Name] = append([]float64(nil), p.Grad...)
				}
				const eps = 1e-6
				worst, nonzero := 0.0, 0
				for _, p := range h.Params() {
					for i := range p.Value {
						v := p.Value[i]
						p.Value[i] = v + eps
						up, err := h.StepLoss(x, n, labels, nil, lc)
						if err != nil {
							t.Fatal(err)
						}
						p.Value[i] = v - eps
						down, err := h.StepLoss(x, n, labels, nil, lc)
						if err != nil {
							t.Fatal(err)
						}
						p.Value[i] = v
						fd := (up.Loss - down.Loss) / (2 * eps)
						g := grads[p.Name][i]
						e := relErr(g, fd)
						worst = math.Max(worst, e)
						if e > 1e-6 {
							t.Errorf("d loss/d %s[%d] = %.9g, finite difference %.9g", p.Name, i, g, fd)
						}
						if g != 0 {
							nonzero++
						}
						if !lc.usesLogits() && p.Name == "cls.bias" || !lc.usesLogits() && !lc.usesProxies() && p.Name == "cls.weight" {
							if g != 0 {
								t.Errorf("unused %s[%d] has gradient %g", p.Name, i, g)
							}
						}
					}
				}
				if nonzero < 20 {
					t.Errorf("only %d non-zero gradient entries", nonzero)
				}
				t.Logf("loss %.6g; worst gradient error %.3g over %d non-zero entries", res.Loss, worst, nonzero)
			})
		}
	}
}

// StepLoss with the group kind is Step; an empty Kind means the group loss; the result of a batch
// does not depend on which losses and batch sizes ran before (graphs are cached per both).
func TestStepLossGroupAndCache(t *testing.T) {
	rng := rand.New(rand.NewSource(14))
	h, err := New(Config{In: 8, Emb: 5, Classes: 4, DType: Float64}, rng)
	if err != nil {
		t.Fatal(err)
	}
	xa, la := randBatch(rng, 12, 8, 4)
	xb, lb := randBatch(rng, 6, 8, 4)
	gl := DefaultGroupLoss()
	want, err := h.Step(xa, 12, la, nil, gl)
	if err != nil {
		t.Fatal(err)
	}
	wantGrad := append([]float64(nil), h.Params()[2].Grad...)
	first := map[LossKind]StepResult{}
	for round := 0; round < 2; round++ {
		for _, k := range LossKinds {
			lc := DefaultLossConfig(k)
			r, err := h.StepLoss(xa, 12, la, nil, lc)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.StepLoss(xb, 6, lb, nil, lc); err != nil {
				t.Fatal(err)
			}
			if round == 0 {
				first[k] = r
			} else if r != first[k] {
				t.Errorf("%s: %+v, then %+v after other losses", k, first[k], r)
			}
		}
	}
	if first[LossGroup] != want {
		t.Errorf("StepLoss(group) = %+v, Step = %+v", first[LossGroup], want)
	}
	r, err := h.StepLoss(xa, 12, la, nil, LossConfig{Group: gl})
	if err != nil || r != want {
		t.Errorf("StepLoss(empty kind) = %+v, %v; want %+v", r, err, want)
	}
	for i, g := range h.Params()[2].Grad {
		if g != wantGrad[i] {
			t.Fatalf("cls.weight gradient %d: %g, want %g", i, g, wantGrad[i])
		}
	}
	if s := first[LossSoftmax]; s.Loss != s.CE || s.NLL != 0 || s.CE != want.CE {
		t.Errorf("softmax %+v: want Loss = CE = the group loss's CE %g, NLL 0", s, want.CE)
	}
	for _, k := range []LossKind{LossTriplet, LossContrastive, LossProxyAnchor, LossMultiSimilarity} {
		if s := first[k]; s.NLL != 0 || s.CE != 0 || !(s.Loss > 0) {
			t.Errorf("%s: %+v, want NLL = CE = 0 and a positive loss", k, s)
		}
	}
	if len(h.graphs) > maxGraphs {
		t.Errorf("%d cached graphs, want at most %d", len(h.graphs), maxGraphs)
	}
}

// Degenerate batches (one class, identical rows, all-zero embeddings, all singletons) give a
// finite loss and finite gradients for every loss, in both dtypes, with known values where defined.
func TestStepLossDegenerate(t *testing.T) {
	for _, dt := range []DType{Float64, Float32} {
		rng := rand.New(rand.NewSource(15))
		h, err := New(Config{In: 5, Emb: 4, Classes: 6, DType: dt}, rng)
		if err != nil {
			t.Fatal(err)
		}
		n := 6
		x, _ := randBatch(rng, n, 5, 3)
		same := make([]float32, n*5)
		for i := range same {
			same[i] = x[i%5]
		}
		type batch struct {
			name   string
			x      []float32
			labels []int
		}
		batches := []batch{
			{"one class", x, []int{2, 2, 2, 2, 2, 2}},
			{"identical rows", same, []int{0, 1, 2, 0, 1, 2}},
			{"all singletons", x, []int{0, 1, 2, 3, 4, 5}},
		}
		run := func(bs []batch, check func(k LossKind, b batch, r StepResult)) {
			for _, b := range bs {
				for _, k := range LossKinds {
					r, err := h.StepLoss(b.x, n, b.labels, nil, DefaultLossConfig(k))
					if err != nil {
						t.Fatalf("%s/%s/%s: %v", dt, b.name, k, err)
					}
					for _, p := range h.Params() {
						if !finite(p.Grad) {
							t.Fatalf("%s/%s/%s: gradient of %s not finite", dt, b.name, k, p.Name)
						}
					}
					check(k, b, r)
				}
			}
		}
		tol := 1e-9
		if dt == Float32 {
			tol = 2e-3 // float32 distances of identical rows are ~1e-4 rather than 0
		}
		run(batches, func(k LossKind, b batch, r StepResult) {
			want := math.NaN()
			switch {
			case k == LossTriplet && b.name == "one class":
				want = 0 // no negatives
			case k == LossTriplet && b.name == "identical rows":
				want = 0.2 // every distance 0: margin
			case k == LossContrastive && b.name == "identical rows":
				want = 1 // positive distances 0, negative ones 0 < margin 1
			case k == LossMultiSimilarity && b.name != "identical rows":
				want = 0 // no negatives, or no positives: every anchor is skipped
			case k == LossMultiSimilarity:
				// Every cosine 1: all pairs kept; per anchor 1 positive and 4 negatives.
				want = math.Log1p(math.Exp(-2*0.5))/2 + math.Log1p(4*math.Exp(50*0.5))/50
			}
			if !math.IsNaN(want) && math.Abs(r.Loss-want) > tol {
				t.Errorf("%s/%s/%s: loss %.9g, want %g", dt, b.name, k, r.Loss, want)
			}
			if math.IsNaN(r.Loss) || math.IsInf(r.Loss, 0) || r.Loss < 0 {
				t.Errorf("%s/%s/%s: loss %g", dt, b.name, k, r.Loss)
			}
		})
		// All-zero embeddings: every normalized embedding is 0 (distances 0, cosines 0).
		if err := h.SetParam("emb.weight", make([]float64, 4*5)); err != nil {
			t.Fatal(err)
		}
		if err := h.SetParam("emb.bias", make([]float64, 4)); err != nil {
			t.Fatal(err)
		}
		run([]batch{{"zero embeddings", x, []int{0, 1, 2, 0, 1, 2}}}, func(k LossKind, b batch, r StepResult) {
			var want float64
			switch k {
			case LossTriplet:
				want = 0.2
			case LossContrastive:
				want = 1
			case LossProxyAnchor:
				// cos = 0: 3 present classes with log(1+2e^{−α(0−δ)}) and 6 classes whose negatives
				// (4 rows for present classes, 6 for absent ones) give log(1+k·e^{αδ}).
				a := 32 * 0.1
				want = math.Log1p(2*math.Exp(a)) + (3*math.Log1p(4*math.Exp(a))+3*math.Log1p(6*math.Exp(a)))/6
			case LossMultiSimilarity:
				// cos = 0: all pairs kept; per anchor 1 positive and 4 negatives at S − λ = −0.5.
				want = math.Log1p(math.Exp(2*0.5))/2 + math.Log1p(4*math.Exp(-50*0.5))/50
			default:
				return
			}
			if math.Abs(r.Loss-want) > 1e-5*math.Max(1, want) {
				t.Errorf("%s/%s/%s: loss %.9g, want %.9g", dt, b.name, k, r.Loss, want)
			}
		})
	}
}

func TestLossConfigValidate(t *testing.T) {
	for _, k := range LossKinds {
		if err := DefaultLossConfig(k).Validate(); err != nil {
			t.Errorf("default %s: %v", k, err)
		}
	}
	nan := math.NaN()
	bad := []struct {
		lc   LossConfig
		want string
	}{
		{LossConfig{Kind: "arcface"}, `unknown loss "arcface"`},
		{LossConfig{Kind: LossGroup}, "temperature"},
		{LossConfig{}, "temperature"},
		{LossConfig{Kind: LossTriplet, TripletMargin: -0.1}, "triplet_margin"},
		{LossConfig{Kind: LossTriplet, TripletMargin: nan}, "triplet_margin"},
		{LossConfig{Kind: LossContrastive, NegMargin: 0}, "neg_margin"},
		{LossConfig{Kind: LossContrastive, PosMargin: -1, NegMargin: 1}, "pos_margin"},
		{LossConfig{Kind: LossContrastive, NegMargin: math.Inf(1)}, "neg_margin"},
		{LossConfig{Kind: LossProxyAnchor, ProxyAlpha: 0, ProxyMargin: 0.1}, "proxy_alpha"},
		{LossConfig{Kind: LossProxyAnchor, ProxyAlpha: 32, ProxyMargin: nan}, "proxy_margin"},
		{LossConfig{Kind: LossMultiSimilarity, MSAlpha: 0, MSBeta: 50, MSMargin: 0.1}, "ms_alpha"},
		{LossConfig{Kind: LossMultiSimilarity, MSAlpha: 2, MSBeta: -1, MSMargin: 0.1}, "ms_beta"},
		{LossConfig{Kind: LossMultiSimilarity, MSAlpha: 2, MSBeta: 50, MSBase: nan}, "ms_base"},
		{LossConfig{Kind: LossMultiSimilarity, MSAlpha: 2, MSBeta: 50, MSMargin: -0.1}, "ms_margin"},
	}
	for _, c := range bad {
		err := c.lc.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "head: ") {
			t.Errorf("%+v: Validate() = %v, want an error about %q", c.lc, err, c.want)
		}
	}
	// Settings of other kinds are ignored.
	lc := LossConfig{Kind: LossSoftmax, TripletMargin: -1, NegMargin: nan}
	if err := lc.Validate(); err != nil {
		t.Errorf("softmax with bad triplet settings: %v", err)
	}
	h, err := New(Config{In: 4, Emb: 3, Classes: 3, DType: Float64}, rand.New(rand.NewSource(16)))
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 4*4)
	if _, err := h.StepLoss(x, 4, []int{0, 1, 2, 0}, nil, LossConfig{Kind: "nope"}); err == nil {
		t.Error("StepLoss with an unknown kind: want an error")
	}
	x[0] = float32(math.NaN())
	if _, err := h.StepLoss(x, 4, []int{0, 1, 2, 0}, nil, DefaultLossConfig(LossTriplet)); !errors.Is(err, ErrNonFinite) {
		t.Errorf("NaN feature: err = %v, want ErrNonFinite", err)
	}
}

// LossConfig round-trips through JSON with the documented keys.
func TestLossConfigJSON(t *testing.T) {
	lc := DefaultLossConfig(LossContrastive)
	b, err := json.Marshal(lc)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"kind":"contrastive"`, `"neg_margin":1`, `"triplet_margin":0.2`, `"proxy_alpha":32`, `"ms_beta":50`, `"temperature":24`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("%s lacks %s", b, key)
		}
	}
	var back LossConfig
	if err := json.Unmarshal(b, &back); err != nil || back != lc {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}

// BenchmarkStepLoss measures one training step per loss at the CUB-100 protocol's sizes (as
// BenchmarkStep): 1280-d features, 512-d embeddings, 50 classes, 6 classes x 9 samples, float32.
func BenchmarkStepLoss(b *testing.B) {
	for _, k := range LossKinds {
		b.Run(string(k), func(b *testing.B) {
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
			lc := DefaultLossConfig(k)
			if _, err := h.StepLoss(x, n, labels, nil, lc); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			defer reportCPU(b)()
			for i := 0; i < b.N; i++ {
				if _, err := h.StepLoss(x, n, labels, nil, lc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
