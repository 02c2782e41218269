package export

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// fakeQuant is QuantizeLinear then DequantizeLinear of v with a uint8 scale and zero point.
func fakeQuant(v, s float64, z int) float64 {
	q := min(max(math.RoundToEven(v/s)+float64(z), 0), 255)
	return (q - float64(z)) * s
}

// TestQuantizedTinyInORT: the QDQ model loads in onnxruntime, whose optimizer fuses every
// Conv and the Add into int8 kernels (no float Conv left), and its outputs equal the QDQ
// arithmetic computed here (quantize, dequantize, float ops) to one output step, on 64 random
// inputs within the calibrated range. With 8-bit weights that holds only on CPUs with VNNI (or
// not x86): on AVX2 alone onnxruntime's u8s8 kernel adds pairs of uint8 x int8 products into a
// saturating int16 (here 214*127 + 141*64 > 32767), which reduce range (7-bit weights) avoids.
func TestQuantizedTinyInORT(t *testing.T) {
	ortLib(t)
	cpu := backbone.CPU()
	for _, reduce := range []bool{true, false} {
		exact := reduce || !cpu.X86 || cpu.VNNI()
		if err := checkTinyInORT(t, reduce, false); err != nil && exact {
			t.Errorf("reduce range %v on %s: %v", reduce, cpu.Model, err)
		} else if err != nil {
			t.Logf("8-bit weights on %s without VNNI, as expected: %v", cpu.Model, err)
		}
	}
	// Unfused, the QDQ model computes the exact int8 arithmetic on any CPU: how the 8-bit model's
	// behaviour on VNNI CPUs is simulated here.
	if err := checkTinyInORT(t, false, true); err != nil {
		t.Errorf("8-bit weights, graph optimizations off: %v", err)
	}
}

func checkTinyInORT(t *testing.T, reduce, unoptimized bool) error {
	q, _, err := Quantize(tinyConvModel(), tinyRanges(), QuantizeOptions{ReduceRange: reduce})
	if err != nil {
		t.Fatal(err)
	}
	b := mustMarshal(t, q)
	ops, err := ort.OptimizedOps(b, ort.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if ops["QLinearConv"] != 2 || ops["QLinearAdd"] != 1 || ops["Conv"] != 0 {
		t.Fatalf("onnxruntime's optimized graph: %v, want 2 QLinearConv, 1 QLinearAdd, no Conv", ops)
	}
	sess, err := ort.NewSession(b, ort.Options{Threads: 1, Unoptimized: unoptimized})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	const n = 64
	r := rand.New(rand.NewPCG(5, 6))
	x := make([]float32, 2*n)
	for i := range x {
		x[i] = float32(r.Float64()*4 - 1)
	}
	got := make([]float32, n)
	if err := sess.Run(x, n, got); err != nil {
		t.Fatal(err)
	}
	inits := onnxpb.Initializers(q.Graph)
	w1, w2 := dequantized(t, inits, "w1"), dequantized(t, inits, "w2")
	b1s, _ := floatsOf(inits, "b1_scale")
	b1 := []float64{float64(inits["b1_quantized"].GetInt32Data()[0]) * float64(b1s[0]), float64(inits["b1_quantized"].GetInt32Data()[1]) * float64(b1s[1])}
	sx, sr, ss, sc := 4.0/255, 2.5/255, 5.0/255, 4.0/255
	for i := 0; i < n; i++ {
		x0, x1 := fakeQuant(float64(x[2*i]), sx, 64), fakeQuant(float64(x[2*i+1]), sx, 64)
		var s [2]float64
		for c := 0; c < 2; c++ {
			rc := fakeQuant(w1[2*c]*x0+w1[2*c+1]*x1+b1[c], sr, 0) // Relu folded into this QuantizeLinear
			s[c] = fakeQuant(rc+rc, ss, 0)
		}
		want := fakeQuant(w2[0]*s[0]+w2[1]*s[1], sc, 191)
		if d := math.Abs(float64(got[i]) - want); d > sc+1e-6 {
			return fmt.Errorf("input %d: onnxruntime %v, QDQ arithmetic %v (|diff| %.3g > one step %.3g)", i, got[i], want, d, sc)
		}
	}
	return nil
}

func floatsOf(inits map[string]*onnx.TensorProto, name string) ([]float32, error) {
	return onnxpb.Floats(inits[name])
}

// dequantized returns the int8 weight name_quantized times its per-channel (axis 0) scale.
func dequantized(t *testing.T, inits map[string]*onnx.TensorProto, name string) []float64 {
	t.Helper()
	q := inits[name+"_quantized"].GetRawData()
	s, err := floatsOf(inits, name+"_scale")
	if err != nil {
		t.Fatal(err)
	}
	per := len(q) / len(s)
	out := make([]float64, len(q))
	for i, v := range q {
		out[i] = float64(int8(v)) * float64(s[i/per])
	}
	return out
}

// TestQuantizePoolInORT: a GlobalAveragePool after a quantized Conv gets a QuantizeLinear on its
// output, the Clip after it folding into that QuantizeLinear, so that onnxruntime runs it as
// QLinearGlobalAveragePool (no float pool left); the fused model agrees with the exact QDQ
// arithmetic (graph optimizations off) to one step of the pooled output's scale.
func TestQuantizePoolInORT(t *testing.T) {
	ortLib(t)
	g := &onnx.GraphProto{
		Name:   "pool",
		Input:  []*onnx.ValueInfoProto{onnxpb.ValueInfo("x", onnxpb.Float, "N", 2, 3, 3)},
		Output: []*onnx.ValueInfoProto{onnxpb.ValueInfo("y", onnxpb.Float, "N", 4)},
		Initializer: []*onnx.TensorProto{
			onnxpb.FloatTensor("w", []int64{4, 2, 1, 1}, []float32{0.5, -1.0, 0.25, 0.125, -0.3, 0.6, 1, 1}),
			onnxpb.FloatTensor("lo", nil, []float32{0}),
			onnxpb.FloatTensor("hi", nil, []float32{2}),
		},
		Node: []*onnx.NodeProto{
			onnxpb.Node("Conv", "conv", []string{"x", "w"}, []string{"c"}),
			onnxpb.Node("GlobalAveragePool", "gap", []string{"c"}, []string{"p"}),
			onnxpb.Node("Clip", "clip", []string{"p", "lo", "hi"}, []string{"q"}),
			onnxpb.Node("Flatten", "flatten", []string{"q"}, []string{"y"}),
		},
	}
	m := &onnx.ModelProto{IrVersion: 7, OpsetImport: []*onnx.OperatorSetIdProto{{Domain: "", Version: 13}}, Graph: g}
	targets, err := QuantizeTargets(m, QuantizeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(targets); got != "[x c q]" {
		t.Fatalf("targets %s, want [x c q] (the Clip's output, not the pool's)", got)
	}
	const qMax = 1.5
	// 7-bit weights: onnxruntime's u8s8 Conv then cannot saturate on AVX2 CPUs without VNNI either
	// (TestQuantizedTinyInORT), so the fused model matches the exact arithmetic on every CPU.
	q, rep, err := Quantize(m, map[string]Range{"x": {-1, 3}, "c": {-3, 3}, "q": {0, qMax}}, QuantizeOptions{ReduceRange: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Conv != 1 || rep.Pool != 1 || rep.RemovedActs != 1 {
		t.Fatalf("report %+v: want 1 Conv, 1 pool, the Clip folded", rep)
	}
	b := mustMarshal(t, q)
	ops, err := ort.OptimizedOps(b, ort.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if ops["QLinearGlobalAveragePool"] != 1 || ops["GlobalAveragePool"] != 0 || ops["Clip"] != 0 || ops["QLinearConv"] != 1 {
		t.Fatalf("onnxruntime's optimized graph: %v, want QLinearConv and QLinearGlobalAveragePool, no float pool or Clip", ops)
	}
	const n = 32
	r := rand.New(rand.NewPCG(7, 8))
	x := make([]float32, n*2*9)
	for i := range x {
		x[i] = float32(r.Float64()*4 - 1)
	}
	run := func(unoptimized bool) []float32 {
		sess, err := ort.NewSession(b, ort.Options{Threads: 1, Unoptimized: unoptimized})
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		y := make([]float32, n*4)
		if err := sess.Run(x, n, y); err != nil {
			t.Fatal(err)
		}
		return y
	}
	fused, exact := run(false), run(true)
	step := qMax / 255
	for i := range exact {
		if d := math.Abs(float64(fused[i] - exact[i])); d > step*1.001 || exact[i] < 0 || exact[i] > qMax*1.001 {
			t.Fatalf("y[%d]: fused %g, exact QDQ %g (step %g, range [0, %g])", i, fused[i], exact[i], step, qMax)
		}
	}
}
