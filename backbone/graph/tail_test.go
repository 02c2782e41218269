package graph

import (
	"encoding/csv"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/weights"
)

// ortLib initializes onnxruntime from ONNXRUNTIME_SHARED_LIBRARY_PATH or skips the test.
func ortLib(t testing.TB) {
	t.Helper()
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
}

// sharedDir returns ../shared (or $PIPELINE_SHARED_DIR) or skips the test.
func sharedDir(t testing.TB) string { return testenv.SharedDir(t) }

// floatMobileNet returns the shared int8 MobileNetV2 converted to float by weights.DequantizeModel.
func floatMobileNet(t testing.TB) *onnx.ModelProto {
	t.Helper()
	p := filepath.Join(sharedDir(t), "models", "mobilenetv2-12-int8.onnx")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared model %q not found: run `make test` with ../shared present", p)
	}
	m, err := onnxpb.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	f, _, err := weights.DequantizeModel(m)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// ortUpTo returns an onnxruntime session computing tensor (per-sample dims) from the image.
func ortUpTo(t testing.TB, m *onnx.ModelProto, tensor string, dims ...int) *ort.Session {
	t.Helper()
	c := onnxpb.Clone(m)
	d := []any{"batch"}
	for _, v := range dims {
		d = append(d, v)
	}
	c.Graph.Output = []*onnx.ValueInfoProto{onnxpb.ValueInfo(tensor, onnxpb.Float, d...)}
	c.Graph.ValueInfo = nil
	b, err := onnxpb.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSession(b, ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// cubImages returns n preprocessed (224×224, ImageNet-normalized) images of n different classes.
func cubImages(t testing.TB, n int) []float32 {
	t.Helper()
	root := filepath.Join(sharedDir(t), "data", "cub100")
	f, err := os.Open(filepath.Join(root, "manifest.csv"))
	if err != nil {
		t.Skipf("CUB data not found: %v", err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	pre := data.DefaultPreprocess()
	size := pre.Size()
	out := make([]float32, 0, n*size)
	seen := map[string]bool{}
	for _, r := range rows[1:] {
		if len(out) == n*size {
			break
		}
		if seen[r[1]] {
			continue
		}
		seen[r[1]] = true
		buf := make([]float32, size)
		if err := pre.TensorFile(filepath.Join(root, r[0]), buf); err != nil {
			t.Fatal(err)
		}
		out = append(out, buf...)
	}
	if len(out) != n*size {
		t.Fatalf("found %d images, want %d", len(out)/size, n)
	}
	return out
}

// The last inverted-residual block of MobileNetV2 (160 -> 960 -> 320 channels at 7×7, no
// residual) starts at the output of the previous block's residual Add, "452_quantized" in the
// int8 model (float after DequantizeModel); "443_quantized" starts the block before it.
const (
	lastBlockInput   = "452_quantized"
	last2BlocksInput = "443_quantized"
	pooledFeatures   = "464_quantized"
)

func TestTailCutPoints(t *testing.T) {
	m := floatMobileNet(t)
	pts := TailCutPoints(m)
	if len(pts) != 17 {
		t.Fatalf("TailCutPoints found %d blocks %v, want MobileNetV2's 17", len(pts), pts)
	}
	if pts[0] != lastBlockInput || pts[1] != last2BlocksInput || pts[16] != "474_quantized" {
		t.Fatalf("TailCutPoints = %v, want %q, %q first and the stem output 474_quantized last", pts, lastBlockInput, last2BlocksInput)
	}
	t.Logf("cut points, last block first: %v", pts)
}

// TestMobileNetTail decodes the last K ∈ {1, 2} inverted-residual blocks + final 1×1 Conv +
// GlobalAveragePool of the dequantized MobileNetV2 and compares its Go forward pass on
// onnxruntime's activations of 4 CUB images with onnxruntime's pooled features:
// max |Go − ORT| ≤ 1e-6 (max |ORT| is 3.8). On AVX2 CPUs without AVX-512 the two agree bit for
// bit (the Convs add their bias after the sums and block the depth by 128 as onnxruntime's
// MLAS does, the depthwise Conv uses fused multiply-adds); elsewhere MLAS picks other kernels
// and the difference is float32 rounding, about 1e-6 (each float32 result is up to 2.8e-6 from
// the float64 one at the final Conv, onnxruntime's as much as ours).
func TestMobileNetTail(t *testing.T) {
	ortLib(t)
	m := floatMobileNet(t)
	const n = 4
	imgs := cubImages(t, n)
	pooled := make([]float32, n*1280)
	if err := ortUpTo(t, m, pooledFeatures, 1280, 1, 1).Run(imgs, n, pooled); err != nil {
		t.Fatal(err)
	}
	maxRef := 0.0
	for _, v := range pooled {
		maxRef = math.Max(maxRef, math.Abs(float64(v)))
	}
	for k, from := range []string{lastBlockInput, last2BlocksInput} {
		act := make([]float32, n*160*7*7)
		if err := ortUpTo(t, m, from, 160, 7, 7).Run(imgs, n, act); err != nil {
			t.Fatal(err)
		}
		g, err := Decode(m, Options{From: []string{from}, To: pooledFeatures, Trainable: true, InputShapes: [][]int{{160, 7, 7}}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := g.Infer([][]float32{act}, n)
		if err != nil {
			t.Fatal(err)
		}
		if s, err := g.OutputShape(); err != nil || len(s) != 3 || s[0] != 1280 || s[1] != 1 || s[2] != 1 {
			t.Fatalf("output shape %v (%v), want [1280 1 1]", s, err)
		}
		worst := 0.0
		for i := range pooled {
			worst = math.Max(worst, math.Abs(float64(got[i]-pooled[i])))
		}
		t.Logf("last %d block(s) from %q: %d params (%d values), max |Go - ORT| = %.3g (max |ORT| = %.3g, relative %.2g)",
			k+1, from, len(g.Params()), paramValues(g), worst, maxRef, worst/maxRef)
		if worst > 1e-6 {
			t.Fatalf("max |Go - ORT| = %g > 1e-6", worst)
		}
		gy := make([]float32, len(got))
		for i := range gy {
			gy[i] = 1.0 / float32(len(gy))
		}
		st, err := newStepper[float32](g, n)
		if err != nil {
			t.Fatal(err)
		}
		_, gx, err := st.step([][]float32{act}, gy)
		if err != nil {
			t.Fatal(err)
		}
		if len(gx) != 1 || len(gx[0]) != len(act) {
			t.Fatalf("input gradient has %d slices", len(gx))
		}
	}
}

func paramValues(g *Graph) int {
	s := 0
	for _, p := range g.Params() {
		s += len(p.Value)
	}
	return s
}

// tailInput returns batch random activations for the last block (N(0, 2²)) and an output
// gradient.
func tailInput(batch int) (x, gy []float32) {
	r := newRand(3)
	x = make([]float32, batch*160*7*7)
	for i := range x {
		x[i] = float32(r.NormFloat64() * 2)
	}
	gy = make([]float32, batch*1280)
	for i := range gy {
		gy[i] = float32(r.NormFloat64())
	}
	return x, gy
}

func tailGraph(t testing.TB, m *onnx.ModelProto) *Graph {
	t.Helper()
	g, err := Decode(m, Options{From: []string{lastBlockInput}, To: pooledFeatures, Trainable: true, InputShapes: [][]int{{160, 7, 7}}})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func BenchmarkTailForwardBackward(b *testing.B) {
	g := tailGraph(b, floatMobileNet(b))
	const batch = 54
	x, gy := tailInput(batch)
	st, err := newStepper[float32](g, batch)
	if err != nil {
		b.Fatal(err)
	}
	kernels := map[string]bool{"avx2": false}
	if useAVX512 { // the AVX2 kernels as the reference on the same CPU
		kernels["avx512"] = true
		defer func() { useAVX512 = true }()
	}
	for name, z := range kernels {
		b.Run(name, func(b *testing.B) {
			useAVX512 = z
			for b.Loop() {
				if _, _, err := st.step([][]float32{x}, gy); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMobileNetTailFloat32 checks the float32 graph against the float64 one on the tail at
// batch 12 (outputs and all gradients, relative to the largest magnitude ≤ 1e-5). The Clips are
// replaced by Identity for this comparison: at a clip bound float32 and float64 may put a value
// on different sides and legitimately pass or block its gradient (about 100 of the 2.5 million
// clipped values lie within 1e-5 of a bound with these inputs).
func TestMobileNetTailFloat32(t *testing.T) {
	m := floatMobileNet(t)
	for _, n := range m.Graph.Node {
		if n.OpType == "Clip" {
			n.OpType, n.Input = "Identity", n.Input[:1]
		}
	}
	g := tailGraph(t, m)
	const batch = 12
	x, gy := tailInput(batch)
	st32, err := newStepper[float32](g, batch)
	if err != nil {
		t.Fatal(err)
	}
	y32, gx32, err := st32.step([][]float32{x}, gy)
	if err != nil {
		t.Fatal(err)
	}
	pg32 := map[string][]float32{}
	for _, p := range g.Params() {
		pg32[p.Name] = make([]float32, len(p.Grad))
		for i, v := range p.Grad {
			pg32[p.Name][i] = float32(v)
		}
	}
	st64, err := newStepper[float64](g, batch)
	if err != nil {
		t.Fatal(err)
	}
	x64, gy64 := make([]float64, len(x)), make([]float64, len(gy))
	for i, v := range x {
		x64[i] = float64(v)
	}
	for i, v := range gy {
		gy64[i] = float64(v)
	}
	y64, gx64, err := st64.step([][]float64{x64}, gy64)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, a []float32, b []float64) {
		worst, scale := 0.0, 0.0
		for i := range b {
			worst = math.Max(worst, math.Abs(float64(a[i])-b[i]))
			scale = math.Max(scale, math.Abs(b[i]))
		}
		if worst > 1e-5*scale {
			t.Errorf("%s: float32 vs float64 max error %.3g of max %.3g", what, worst, scale)
		} else {
			t.Logf("%s: float32 vs float64 max error %.2g (relative %.2g)", what, worst, worst/scale)
		}
	}
	check("output", y32, y64)
	check("input gradient", gx32[0], gx64[0])
	for _, p := range g.Params() {
		check("gradient of "+p.Name, pg32[p.Name], p.Grad)
	}
}

// TestMobileNetWholeModel decodes the whole float MobileNetV2 from the image to the pooled
// features (52 Convs) and checks that going on to the logits is refused: the classifier's
// Reshape takes its shape from Shape/Gather/Concat, and the error suggests cutting after it.
func TestMobileNetWholeModel(t *testing.T) {
	m := floatMobileNet(t)
	g, err := Decode(m, Options{From: []string{"input"}, To: pooledFeatures, Trainable: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Params()) != 104 {
		t.Errorf("%d Params, want 104 (52 Conv weights and biases)", len(g.Params()))
	}
	_, err = Decode(m, Options{From: []string{"input"}, To: "output"})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `cut later, e.g. at "472_quantized"`) {
		t.Fatalf("Decode to the logits: %v", err)
	}
	t.Logf("Decode to the logits: %v", err)
}
