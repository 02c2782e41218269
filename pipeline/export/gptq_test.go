package export

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"gonum.org/v1/gonum/mat"
)

// TestMomentsByHand: the second moments of two images of a 2-channel, 2-position NCHW tensor.
func TestMomentsByHand(t *testing.T) {
	m := NewMoments(map[string]int{"x": 2})
	// image 0: channel 0 = [1, 2], channel 1 = [3, 4]; image 1: channel 0 = [0, 1], channel 1 = [-1, 2]
	if err := m.Observe("x", []float32{1, 2, 3, 4, 0, 1, -1, 2}, 2); err != nil {
		t.Fatal(err)
	}
	// vectors (1,3), (2,4), (0,-1), (1,2): sum x0^2 = 6, x0 x1 = 3+8+0+2 = 13, x1^2 = 9+16+1+4 = 30
	h := m.Of("x")
	if h.At(0, 0) != 6 || h.At(0, 1) != 13 || h.At(1, 1) != 30 {
		t.Errorf("moments %v, want [[6 13] [13 30]]", mat.Formatted(h))
	}
	if err := m.Observe("x", []float32{1, 2, 3}, 1); err == nil {
		t.Error("3 values for 2 channels: no error")
	}
	if m.Of("y") != nil || m.Observe("y", []float32{1}, 1) == nil {
		t.Error("a tensor not accumulated: moments or no error")
	}
}

// TestQuantizeWeightsGPTQByHand: one row, three inputs, the first two correlated (moments
// [[1 .9 0] [.9 1 0] [0 0 1]], damped by 1% of the mean diagonal to 1.01). Weights (0.3, 0.18, 0.5),
// qmax 4: scale 0.5/4 = 0.125. Column 0: 2.4 rounds to 2, error 0.05, which moves column 1 by
// 0.05 x 0.9/1.01 to 0.22455 (the optimal compensation on the correlated input), 1.796 steps: 2,
// where rounding to nearest gives 1 (1.44 steps). Column 2's input is independent: 4 either way.
func TestQuantizeWeightsGPTQByHand(t *testing.T) {
	h := mat.NewSymDense(3, []float64{1, 0.9, 0, 0.9, 1, 0, 0, 0, 1})
	w := []float32{0.3, 0.18, 0.5}
	q, s, err := QuantizeWeightsGPTQ(w, 1, 3, 4, h)
	if err != nil {
		t.Fatal(err)
	}
	if q[0] != 2 || q[1] != 2 || q[2] != 4 || s[0] != 0.125 {
		t.Errorf("q %v scale %v, want [2 2 4] 0.125", q, s)
	}
	if n, _ := QuantizeWeights(w, 1, 4); n[1] != 1 {
		t.Errorf("to nearest: %v, want column 1 at 1 (the case shows nothing otherwise)", n)
	}
	// An input that is always 0 gets a 0 weight.
	q, _, err = QuantizeWeightsGPTQ([]float32{0.3, 0.5}, 1, 2, 4, mat.NewSymDense(2, []float64{0, 0, 0, 1}))
	if err != nil || q[0] != 0 || q[1] != 4 {
		t.Errorf("dead input: q %v (%v), want [0 4]", q, err)
	}
	if _, _, err := QuantizeWeightsGPTQ(w, 1, 3, 4, mat.NewSymDense(2, nil)); err == nil {
		t.Error("moments of the wrong size: no error")
	}
	if _, _, err := QuantizeWeightsGPTQ(w, 1, 3, 4, mat.NewSymDense(3, []float64{1, 0, 0, 0, math.NaN(), 0, 0, 0, 1})); err == nil {
		t.Error("NaN moments: no error")
	}
}

// TestGPTQKeepsSubStepChanges is the case it is for: weights that were on an int8 grid and moved
// by less than half a step (a fine-tuned tail). Rounding to nearest returns the old integers, so
// the layer computes what it computed before the changes; with error feedback on correlated inputs
// its outputs stay much closer to those of the changed weights.
func TestGPTQKeepsSubStepChanges(t *testing.T) {
	const rows, cols, n, qmax = 16, 48, 4000, 127
	r := rand.New(rand.NewPCG(3, 4))
	// Correlated inputs, as activations are (a few directions carry most of the variance): x = A z,
	// z_k normal with standard deviation 1/(k+1), stored as one image of cols channels x n positions.
	a := make([]float64, cols*cols)
	for i := range a {
		a[i] = r.NormFloat64()
	}
	x := make([]float32, cols*n)
	for p := 0; p < n; p++ {
		z := make([]float64, cols)
		for i := range z {
			z[i] = r.NormFloat64() / float64(i+1)
		}
		for c := 0; c < cols; c++ {
			var v float64
			for k := 0; k < cols; k++ {
				v += a[c*cols+k] * z[k]
			}
			x[c*n+p] = float32(v)
		}
	}
	m := NewMoments(map[string]int{"x": cols})
	if err := m.Observe("x", x, 1); err != nil {
		t.Fatal(err)
	}
	// Source weights: integers times a per-row step, each row holding +-qmax (so its scale is that
	// step again); then moved by less than 0.4 steps.
	step := make([]float64, rows)
	w := make([]float32, rows*cols)
	for i := 0; i < rows; i++ {
		step[i] = 0.001 * (1 + r.Float64())
		for j := 0; j < cols; j++ {
			k := float64(r.IntN(2*qmax-1) - qmax + 1)
			if j == 0 {
				k = qmax
			}
			d := 0.0
			if j > 0 {
				d = (r.Float64()*0.8 - 0.4) * step[i]
			}
			w[i*cols+j] = float32(k*step[i] + d)
		}
	}
	nearest, ns := QuantizeWeights(w, rows, qmax)
	gptq, gs, err := QuantizeWeightsGPTQ(w, rows, cols, qmax, m.Of("x"))
	if err != nil {
		t.Fatal(err)
	}
	// outErr is sum over inputs of |(w - wq) x|^2 = sum over rows of d^T H d, d the weight error.
	h := m.Of("x")
	outErr := func(q []int8, s []float32) float64 {
		var e float64
		for i := 0; i < rows; i++ {
			d := make([]float64, cols)
			for j := range d {
				d[j] = float64(w[i*cols+j]) - float64(q[i*cols+j])*float64(s[i])
			}
			dv := mat.NewVecDense(cols, d)
			e += mat.Inner(dv, h, dv)
		}
		return e
	}
	back := 0
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			if math.Abs(float64(nearest[i*cols+j])*float64(ns[i])-float64(w[i*cols+j])) < 0.45*step[i] && math.Abs(float64(ns[i])-step[i]) < 1e-9 {
				back++
			}
		}
	}
	en, eg := outErr(nearest, ns), outErr(gptq, gs)
	t.Logf("output error: to nearest %.4g, with error feedback %.4g (%.2fx)", en, eg, eg/en)
	if back != rows*cols {
		t.Fatalf("to nearest, %d of %d weights went back to the source grid: the case is not what it claims", back, rows*cols)
	}
	if !(eg < 0.5*en) {
		t.Errorf("with error feedback the output error is %.4g, to nearest %.4g: want less than half", eg, en)
	}
}

// TestQuantizeRoundsPointwiseWithMoments: the tiny model's two 1x1 Convs are listed with their
// inputs' channels; with those inputs' moments Quantize rounds both with error feedback (its int8
// weights are QuantizeWeightsGPTQ's), and says so in its report and metadata; without, to nearest.
// A grouped (depthwise) Conv is no linear map of the channel vector.
func TestQuantizeRoundsPointwiseWithMoments(t *testing.T) {
	m := tinyConvModel()
	in, err := PointwiseInputs(m, QuantizeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(in) != 2 || in["x"] != 2 || in["s"] != 2 {
		t.Fatalf("pointwise inputs %v, want x and s, 2 channels each", in)
	}
	mo := NewMoments(in)
	// Three images of [2 channels, 1 position], strongly correlated channels.
	for _, name := range []string{"x", "s"} {
		if err := mo.Observe(name, []float32{1, 0.9, -0.5, -0.6, 2, 1.7}, 3); err != nil {
			t.Fatal(err)
		}
	}
	q, rep, err := Quantize(m, tinyRanges(), QuantizeOptions{Moments: mo})
	if err != nil {
		t.Fatal(err)
	}
	inits := onnxpb.Initializers(q.Graph)
	w1, _ := onnxpb.Floats(onnxpb.Initializers(m.Graph)["w1"])
	want, _, err := QuantizeWeightsGPTQ(w1, 2, 2, 127, mo.Of("x"))
	if err != nil {
		t.Fatal(err)
	}
	got := inits["w1_quantized"].GetRawData()
	for i := range want {
		if int8(got[i]) != want[i] {
			t.Fatalf("w1 int8 %v, want QuantizeWeightsGPTQ's %v", got, want)
		}
	}
	if rep.ErrorFeedback != 2 || !strings.HasPrefix(metadata(q, MetaRounding), "gptq: 2 of 2 Convs") {
		t.Errorf("report %+v, metadata %q", rep, metadata(q, MetaRounding))
	}
	q, rep, err = Quantize(m, tinyRanges(), QuantizeOptions{})
	if err != nil || rep.ErrorFeedback != 0 || metadata(q, MetaRounding) != "nearest" {
		t.Errorf("without moments: report %+v, metadata %q (%v)", rep, metadata(q, MetaRounding), err)
	}
	dw := onnxpb.Node("Conv", "dw", []string{"x", "wd"}, []string{"y"}, onnxpb.AttrInt("group", 2))
	if _, ok := pointwise(dw, map[string]*onnx.TensorProto{"wd": onnxpb.FloatTensor("wd", []int64{2, 1, 1, 1}, []float32{1, 2})}); ok {
		t.Error("a depthwise Conv counted as pointwise")
	}
}
