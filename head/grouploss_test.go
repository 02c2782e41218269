package head

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/internal/parallel"
	"github.com/grouploss/pipeline/internal/testenv"
)

// sharedDir returns the read-only shared data directory: $PIPELINE_SHARED_DIR, else ../shared
// relative to the repository root (the directory holding go.mod). It skips the test when absent.
func sharedDir(t testing.TB) string { return testenv.SharedDir(t) }

type goldenCase struct {
	Description string      `json:"description"`
	Labels      []int       `json:"labels"`
	Anchors     []bool      `json:"anchors"`
	Temperature float64     `json:"temperature"`
	Iterations  int         `json:"iterations"`
	Scaling     float64     `json:"scaling"`
	NumClasses  int         `json:"num_classes"`
	Embeddings  [][]float64 `json:"embeddings"`
	Logits      [][]float64 `json:"logits"`
	Expected    struct {
		W              [][]float64 `json:"W"`
		RefinedProbs   [][]float64 `json:"refined_probs"`
		LossNLL        float64     `json:"loss_nll"`
		LossCE         float64     `json:"loss_ce"`
		Loss           float64     `json:"loss"`
		GradEmbeddings [][]float64 `json:"grad_embeddings"`
		GradLogits     [][]float64 `json:"grad_logits"`
	} `json:"expected"`
}

func loadGolden(t *testing.T) []goldenCase {
	t.Helper()
	path := filepath.Join(sharedDir(t), "reference", "grouploss_golden.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("golden file %q unreadable (%v); run `make test`", path, err)
	}
	var doc struct {
		Cases []goldenCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	if len(doc.Cases) == 0 {
		t.Fatalf("%s has no cases", path)
	}
	return doc.Cases
}

// maxErr returns max|a-b| / max(1, |b|) over matching entries; it fails on a shape mismatch.
func maxErr(t *testing.T, name string, got, want [][]float64) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows, want %d", name, len(got), len(want))
	}
	m := 0.0
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("%s row %d: %d cols, want %d", name, i, len(got[i]), len(want[i]))
		}
		for j := range want[i] {
			m = math.Max(m, relErr(got[i][j], want[i][j]))
		}
	}
	return m
}

func relErr(a, b float64) float64 {
	d := math.Abs(a - b)
	if math.IsNaN(d) {
		return math.Inf(1)
	}
	return d / math.Max(1, math.Abs(b))
}

func TestEvalLossGolden(t *testing.T) {
	cases := loadGolden(t)
	for _, dt := range []struct {
		dt  DType
		tol float64
	}{{Float64, 1e-6}, {Float32, 1e-4}} {
		for ci, c := range cases {
			gl := GroupLoss{Temperature: c.Temperature, Iterations: c.Iterations, Scaling: c.Scaling}
			t.Run(dt.dt.String()+"/"+c.Description, func(t *testing.T) {
				if a := Anchors(c.Labels, anchorsPerClass(c.Anchors, c.Labels)); !equalBools(a, c.Anchors) {
					t.Errorf("case %d: Anchors() = %v, want %v", ci, a, c.Anchors)
				}
				r, err := EvalLoss(gl, c.Embeddings, c.Logits, c.Labels, c.Anchors, dt.dt)
				if err != nil {
					t.Fatal(err)
				}
				errs := map[string]float64{
					"loss":            relErr(r.Loss, c.Expected.Loss),
					"loss_nll":        relErr(r.NLL, c.Expected.LossNLL),
					"loss_ce":         relErr(r.CE, c.Expected.LossCE),
					"W":               maxErr(t, "W", r.W, c.Expected.W),
					"refined_probs":   maxErr(t, "refined_probs", r.P, c.Expected.RefinedProbs),
					"grad_embeddings": maxErr(t, "grad_embeddings", r.GradEmb, c.Expected.GradEmbeddings),
					"grad_logits":     maxErr(t, "grad_logits", r.GradLogits, c.Expected.GradLogits),
				}
				for name, e := range errs {
					if e > dt.tol {
						t.Errorf("%s: max relative error %.3g > %g", name, e, dt.tol)
					}
				}
				t.Logf("loss %.10g (want %.10g); worst error %.3g", r.Loss, c.Expected.Loss, maxOf(errs))
			})
		}
	}
}

// anchorsPerClass infers the golden case's anchors per class (the count for the first label).
func anchorsPerClass(anchors []bool, labels []int) int {
	k := 0
	for i, a := range anchors {
		if a && labels[i] == labels[0] {
			k++
		}
	}
	return k
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func maxOf(m map[string]float64) float64 {
	x := 0.0
	for _, v := range m {
		x = math.Max(x, v)
	}
	return x
}

func TestAnchors(t *testing.T) {
	got := Anchors([]int{3, 1, 3, 3, 1, 7}, 2)
	want := []bool{true, true, true, false, true, true}
	if !equalBools(got, want) {
		t.Errorf("Anchors = %v, want %v", got, want)
	}
	if got := Anchors([]int{0, 0}, 0); !equalBools(got, []bool{false, false}) {
		t.Errorf("Anchors(perClass 0) = %v", got)
	}
}

func TestGroupLossValidate(t *testing.T) {
	if err := DefaultGroupLoss().Validate(); err != nil {
		t.Fatalf("default: %v", err)
	}
	for _, gl := range []GroupLoss{
		{Temperature: 0, Iterations: 1, Scaling: 1},
		{Temperature: math.NaN(), Iterations: 1, Scaling: 1},
		{Temperature: 1, Iterations: -1, Scaling: 1},
		{Temperature: 1, Iterations: 1, Scaling: -1},
		{Temperature: 1, Iterations: 1, Scaling: 1, AnchorsPerClass: -2},
	} {
		if err := gl.Validate(); err == nil {
			t.Errorf("%+v: Validate() = nil, want an error", gl)
		}
	}
}

// Degenerate batches: one class, identical rows, and zero-variance rows must give finite values.
func TestEvalLossDegenerate(t *testing.T) {
	constRow := []float64{2, 2, 2, 2}
	varied := [][]float64{{1, 2, 3, 4}, {4, 1, 0, 2}, {0, 0, 1, 5}, {3, 3, 1, 0}}
	logits := [][]float64{{1, 0, -1}, {0, 2, 1}, {3, 1, 0}, {0, 0, 0}}
	cases := []struct {
		name   string
		emb    [][]float64
		labels []int
	}{
		{"one class", varied, []int{1, 1, 1, 1}},
		{"identical rows", [][]float64{{1, 2, 3, 4}, {1, 2, 3, 4}, {1, 2, 3, 4}, {1, 2, 3, 4}}, []int{0, 1, 0, 1}},
		{"all rows constant", [][]float64{constRow, constRow, constRow, constRow}, []int{0, 1, 0, 1}},
		{"all zero", [][]float64{{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}}, []int{0, 0, 2, 2}},
		{"one constant row", [][]float64{varied[0], constRow, varied[2], varied[3]}, []int{0, 1, 0, 1}},
	}
	for _, dt := range []DType{Float64, Float32} {
		for _, c := range cases {
			t.Run(dt.String()+"/"+c.name, func(t *testing.T) {
				gl := DefaultGroupLoss()
				gl.Iterations = 2
				r, err := EvalLoss(gl, c.emb, logits, c.labels, nil, dt)
				if err != nil {
					t.Fatal(err)
				}
				for name, m := range map[string][][]float64{"W": r.W, "P": r.P, "grad_emb": r.GradEmb, "grad_logits": r.GradLogits} {
					for _, row := range m {
						if !finite(row) {
							t.Fatalf("%s has non-finite values: %v", name, m)
						}
					}
				}
				for i, row := range r.P {
					s := 0.0
					for _, v := range row {
						s += v
					}
					if math.Abs(s-1) > 1e-5 {
						t.Errorf("refined probabilities of row %d sum to %g", i, s)
					}
				}
				for i, row := range c.emb {
					if row[0] == row[1] && row[1] == row[2] && row[2] == row[3] {
						// A zero-variance row correlates with nothing: W row = e_i, zero gradient.
						for j, v := range r.GradEmb[i] {
							if v != 0 {
								t.Errorf("grad_emb[%d][%d] = %g for a constant row, want 0", i, j, v)
							}
						}
						for j, v := range r.W[i] {
							if want := b2f(i == j); math.Abs(v-want) > 1e-6 {
								t.Errorf("W[%d][%d] = %g for a constant row, want %g", i, j, v, want)
							}
						}
					}
				}
				if !(r.Loss > 0) || math.IsInf(r.Loss, 0) {
					t.Errorf("loss %g", r.Loss)
				}
			})
		}
	}
}

func TestEvalLossErrors(t *testing.T) {
	emb := [][]float64{{1, 2}, {2, 1}}
	logits := [][]float64{{0, 1}, {1, 0}}
	if _, err := EvalLoss(DefaultGroupLoss(), emb, logits, []int{0, 2}, nil, Float64); err == nil {
		t.Error("label out of range: want an error")
	}
	if _, err := EvalLoss(DefaultGroupLoss(), emb, logits[:1], []int{0, 1}, nil, Float64); err == nil {
		t.Error("row mismatch: want an error")
	}
	_, err := EvalLoss(DefaultGroupLoss(), emb, [][]float64{{0, math.NaN()}, {1, 0}}, []int{0, 1}, nil, Float64)
	if !errors.Is(err, ErrNonFinite) {
		t.Errorf("NaN logits: err = %v, want ErrNonFinite", err)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func TestRecoverErr(t *testing.T) {
	f := func() (err error) {
		defer recoverErr(&err)
		var m map[string]int
		m["x"] = 1 // panics
		return nil
	}
	err := f()
	if err == nil || !strings.Contains(err.Error(), "head: internal panic in") || !strings.Contains(err.Error(), "TestRecoverErr") {
		t.Errorf("err = %v, want an internal panic error naming the test function", err)
	}
}

func TestFinite(t *testing.T) {
	for _, c := range []struct {
		v    []float64
		want bool
	}{
		{nil, true}, {[]float64{1, -2, 0, 1e308, -1e308}, true},
		{[]float64{1, 2, 3, 4, math.NaN()}, false}, {[]float64{math.Inf(-1)}, false},
		{[]float64{0, 0, math.Inf(1), 0, 0, 0}, false},
	} {
		if got := finite(c.v); got != c.want {
			t.Errorf("finite(%v) = %v, want %v", c.v, got, c.want)
		}
	}
	// Large enough to be split over the cores: a NaN in the last part is found.
	big := make([]float64, 4*parallel.MinWork+3)
	if !finite(big) {
		t.Error("finite(zeros) = false")
	}
	big[len(big)-2] = math.NaN()
	if finite(big) {
		t.Error("finite missed a NaN near the end of a large slice")
	}
}

// Rows are shifted by their own maximum: gorgonia's SoftMax gives NaN for [[0, 0], [1000, 0]].
func TestEvalLossLargeLogits(t *testing.T) {
	gl := GroupLoss{Temperature: 1, Iterations: 1, Scaling: 1}
	r, err := EvalLoss(gl, [][]float64{{1, 2}, {2, 1}}, [][]float64{{0, 0}, {1000, 0}}, []int{0, 0}, nil, Float64)
	if err != nil {
		t.Fatal(err)
	}
	if want := math.Ln2 / 2; math.Abs(r.CE-want) > 1e-12 {
		t.Errorf("CE = %.15g, want %.15g", r.CE, want)
	}
}
