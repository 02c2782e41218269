package export

import (
	"math"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// tinyConvModel: x [N,2,1,1] -> Conv(w1, b1) -> Relu -> r; s = r + r; Conv(w2) -> c2 ->
// Flatten -> y. Opset 12, so quantizing raises it to 13.
func tinyConvModel() *onnx.ModelProto {
	g := &onnx.GraphProto{
		Name:   "tiny",
		Input:  []*onnx.ValueInfoProto{onnxpb.ValueInfo("x", onnxpb.Float, "N", 2, 1, 1)},
		Output: []*onnx.ValueInfoProto{onnxpb.ValueInfo("y", onnxpb.Float, "N", 1)},
		Initializer: []*onnx.TensorProto{
			onnxpb.FloatTensor("w1", []int64{2, 2, 1, 1}, []float32{0.5, -1.0, 0.25, 0.125}),
			onnxpb.FloatTensor("b1", []int64{2}, []float32{0.1, -0.2}),
			onnxpb.FloatTensor("w2", []int64{1, 2, 1, 1}, []float32{0.3, -0.6}),
		},
		Node: []*onnx.NodeProto{
			onnxpb.Node("Conv", "conv1", []string{"x", "w1", "b1"}, []string{"c1"}),
			onnxpb.Node("Relu", "relu1", []string{"c1"}, []string{"r"}),
			onnxpb.Node("Add", "add", []string{"r", "r"}, []string{"s"}),
			onnxpb.Node("Conv", "conv2", []string{"s", "w2"}, []string{"c2"}),
			onnxpb.Node("Flatten", "flatten", []string{"c2"}, []string{"y"}),
		},
	}
	return &onnx.ModelProto{IrVersion: 7, OpsetImport: []*onnx.OperatorSetIdProto{{Domain: "", Version: 12}}, Graph: g}
}

func tinyRanges() map[string]Range {
	return map[string]Range{"x": {-1, 3}, "r": {0, 2.5}, "s": {0, 5}, "c2": {-3, 1}}
}

// TestQuantizeTinyByHand: the scales, zero points and int8/int32 values of a two-Conv model equal
// a hand computation of onnxruntime's conventions, with and without reduce range.
func TestQuantizeTinyByHand(t *testing.T) {
	m := tinyConvModel()
	targets, err := QuantizeTargets(m, QuantizeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(targets, ","); got != "x,r,s,c2" {
		t.Fatalf("targets %s, want x,r,s,c2 (the Relu output, not the Conv's, and not the graph output)", got)
	}
	for _, reduce := range []bool{false, true} {
		q, rep, err := Quantize(m, tinyRanges(), QuantizeOptions{ReduceRange: reduce})
		if err != nil {
			t.Fatal(err)
		}
		qmax := 127.0
		if reduce {
			qmax = 64
		}
		if rep.Conv != 2 || rep.Add != 1 || rep.RemovedActs != 1 || rep.Activations != 4 || rep.OpsetRaisedTo != 13 || rep.WeightQMax != int(qmax) {
			t.Fatalf("reduce %v: report %+v", reduce, rep)
		}
		if _, err := onnxpb.Unmarshal(mustMarshal(t, q), "quantized"); err != nil {
			t.Fatalf("quantized model fails our checks: %v", err)
		}
		inits := onnxpb.Initializers(q.Graph)
		// x: range [-1, 3] -> scale 4/255, zero point round(1 / (4/255)) = round(63.75) = 64.
		wantScale(t, inits, "x_scale", []float64{4.0 / 255})
		wantUint8(t, inits, "x_zero_point", []uint8{64})
		// r: [0, 2.5] -> 2.5/255, 0. c2: [-3, 1] -> 4/255, round(3*255/4) = round(191.25) = 191.
		wantScale(t, inits, "r_scale", []float64{2.5 / 255})
		wantUint8(t, inits, "r_zero_point", []uint8{0})
		wantUint8(t, inits, "c2_zero_point", []uint8{191})
		// w1 rows: max |w| 1 and 0.25 -> scales 1/qmax, 0.25/qmax.
		s1 := []float64{1 / qmax, 0.25 / qmax}
		wantScale(t, inits, "w1_scale", s1)
		var wq []int8
		for i, w := range []float64{0.5, -1.0, 0.25, 0.125} {
			wq = append(wq, int8(math.RoundToEven(w/s1[i/2])))
		}
		wantInt8(t, inits, "w1_quantized", wq)
		if !reduce && (wq[0] != 64 || wq[1] != -127 || wq[2] != 127 || wq[3] != 64) { // 63.5 rounds to even 64
			t.Fatalf("hand values %v", wq)
		}
		// Bias: scale = x scale * weight scale, value round(b / scale).
		bs := []float64{4.0 / 255 * s1[0], 4.0 / 255 * s1[1]}
		wantScale(t, inits, "b1_scale", bs)
		b := onnxpb.Initializers(q.Graph)["b1_quantized"].GetInt32Data()
		for c, v := range []float64{0.1, -0.2} {
			if want := int32(math.RoundToEven(v / float64(float32(bs[c])))); b[c] != want {
				t.Errorf("bias %d: %d, want %d", c, b[c], want)
			}
		}
		ops := map[string]int{}
		for _, n := range q.Graph.Node {
			ops[n.GetOpType()]++
		}
		// 4 activations quantized; DequantizeLinear: conv1 x, add r twice, conv2 s, flatten c2,
		// w1, b1, w2.
		if ops["QuantizeLinear"] != 4 || ops["DequantizeLinear"] != 8 || ops["Relu"] != 0 || ops["Conv"] != 2 {
			t.Errorf("reduce %v: ops %v", reduce, ops)
		}
		if got := metadata(q, MetaReduceRange); got != map[bool]string{false: "false", true: "true"}[reduce] {
			t.Errorf("metadata %s = %q", MetaReduceRange, got)
		}
	}
	// The source model is left alone.
	if len(m.Graph.Node) != 5 || m.OpsetImport[0].Version != 12 {
		t.Fatal("Quantize modified its input")
	}
}

// TestQuantizeRefuses: a missing or non-finite range and an op whose meaning changes at opset 13
// are errors naming the tensor or node.
func TestQuantizeRefuses(t *testing.T) {
	m := tinyConvModel()
	r := tinyRanges()
	delete(r, "s")
	if _, _, err := Quantize(m, r, QuantizeOptions{}); err == nil || !strings.Contains(err.Error(), `"s"`) {
		t.Errorf("missing range: %v", err)
	}
	r = tinyRanges()
	r["r"] = Range{0, float32(math.NaN())}
	if _, _, err := Quantize(m, r, QuantizeOptions{}); err == nil || !strings.Contains(err.Error(), `"r"`) {
		t.Errorf("NaN range: %v", err)
	}
	m.Graph.Node = append(m.Graph.Node, onnxpb.Node("Squeeze", "sq", []string{"y"}, []string{"z"}))
	m.Graph.Output = []*onnx.ValueInfoProto{onnxpb.ValueInfo("z", onnxpb.Float, "N")}
	if _, _, err := Quantize(m, tinyRanges(), QuantizeOptions{}); err == nil || !strings.Contains(err.Error(), `"sq"`) {
		t.Errorf("Squeeze at opset 12: %v", err)
	}
}

// TestCalibratorHostile: all-zero activations and a single observed value give finite ranges, and
// the quantization parameters of a constant tensor are finite and flagged as degenerate.
func TestCalibratorHostile(t *testing.T) {
	c := NewCalibrator([]string{"zero", "one", "wide", "negative"})
	// A one-sided tensor far from 0 (all-black images after normalization): entropy's smallest
	// threshold lies below all its values.
	if err := c.Observe("negative", []float32{-2.1, -1.8, -2.0, -2.1}); err != nil {
		t.Fatal(err)
	}
	if err := c.Observe("zero", make([]float32, 100)); err != nil {
		t.Fatal(err)
	}
	if err := c.Observe("one", []float32{2.5}); err != nil {
		t.Fatal(err)
	}
	wide := make([]float32, 100000)
	for i := range wide {
		wide[i] = float32(i%1000) / 1000
	}
	wide[0] = 100 // one outlier
	if err := c.Observe("wide", wide); err != nil {
		t.Fatal(err)
	}
	if err := c.Observe("wide", []float32{float32(math.Inf(1))}); err == nil || !strings.Contains(err.Error(), `"wide"`) {
		t.Errorf("Inf: %v", err)
	}
	for _, method := range CalibrationMethods {
		r, err := c.Ranges(method)
		if err != nil {
			t.Fatal(err)
		}
		for name, rg := range r {
			if rg.Min > rg.Max {
				t.Errorf("%s %s: range %v", method, name, rg)
			}
			s, _, _ := ActivationParams(rg)
			if math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) || !(s > 0) {
				t.Errorf("%s %s: range %v scale %v", method, name, rg, s)
			}
		}
		if _, _, deg := ActivationParams(r["zero"]); !deg {
			t.Errorf("%s: all-zero tensor not flagged degenerate", method)
		}
		if r["one"].Max != 2.5 && method == CalibMinMax {
			t.Errorf("minmax one value: %v", r["one"])
		}
		// The outlier sets minmax's range; percentile clips it away, entropy too down to its
		// smallest threshold (255 of the 2048 bins, 12.5).
		limit := map[string]float32{CalibMinMax: 100.01, CalibPercentile: 1.1, CalibEntropy: 12.5}[method]
		if method == CalibMinMax && r["wide"].Max != 100 || !(r["wide"].Max <= limit && r["wide"].Max > 0.9) {
			t.Errorf("%s: wide range %v", method, r["wide"])
		}
	}
	if _, err := NewCalibrator([]string{"never"}).Ranges(CalibMinMax); err == nil {
		t.Error("a tensor never observed gave a range")
	}
}

// TestSetFlipRoundTrip: removing the mirror pass from a flip model and adding it back gives the
// nodes of the flip model.
func TestSetFlipRoundTrip(t *testing.T) {
	cut, ci := tinyCut(t)
	flip, err := Build(cut, ci, []Layer{FlipAverage{}, L2Normalize{}}, Metadata{SourceSHA256: "x"})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := SetFlip(flip, false)
	if err != nil {
		t.Fatal(err)
	}
	if HasFlip(plain) || !HasFlip(flip) || metadata(plain, MetaFlipTTA) != "false" {
		t.Fatal("SetFlip(false) kept the mirror pass")
	}
	if _, err := onnxpb.Unmarshal(mustMarshal(t, plain), "plain"); err != nil {
		t.Fatal(err)
	}
	again, err := SetFlip(plain, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := onnxpb.Unmarshal(mustMarshal(t, again), "again"); err != nil {
		t.Fatal(err)
	}
	if len(again.Graph.Node) != len(flip.Graph.Node) || !HasFlip(again) {
		t.Fatalf("round trip: %d nodes, want %d", len(again.Graph.Node), len(flip.Graph.Node))
	}
}

func mustMarshal(t *testing.T, m *onnx.ModelProto) []byte {
	t.Helper()
	b, err := onnxpb.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantScale(t *testing.T, inits map[string]*onnx.TensorProto, name string, want []float64) {
	t.Helper()
	got, err := onnxpb.Floats(inits[name])
	if err != nil || len(got) != len(want) {
		t.Fatalf("%s: %v %v, want %v", name, got, err, want)
	}
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > 1e-7*want[i] {
			t.Errorf("%s[%d] = %v, want %v", name, i, got[i], want[i])
		}
	}
}

func wantUint8(t *testing.T, inits map[string]*onnx.TensorProto, name string, want []uint8) {
	t.Helper()
	if got := inits[name].GetRawData(); string(got) != string(want) {
		t.Errorf("%s = %v, want %v", name, got, want)
	}
}

func wantInt8(t *testing.T, inits map[string]*onnx.TensorProto, name string, want []int8) {
	t.Helper()
	got := inits[name].GetRawData()
	for i := range want {
		if i >= len(got) || int8(got[i]) != want[i] {
			t.Fatalf("%s = %v, want %v", name, got, want)
		}
	}
}

// tinyCut is the test backbone cut at its automatic feature tensor.
func tinyCut(t *testing.T) (*onnx.ModelProto, *backbone.CutInfo) {
	t.Helper()
	m, err := onnxpb.Load(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	cut, ci, err := backbone.Cut(m, "")
	if err != nil {
		t.Fatal(err)
	}
	return cut, ci
}
