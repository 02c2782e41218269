package backbone

import (
	"math"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/testenv"
	ortgo "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"
)

// tinyReference computes the pooled features of the tiny CNN in float64 from its weights:
// mean over 6x6 of relu(conv3x3(x, pad 1) + b).
func tinyReference(t *testing.T, m *onnx.ModelProto, x []float32, n int) []float32 {
	t.Helper()
	inits := onnxpb.Initializers(m.GetGraph())
	w, err := onnxpb.Floats(inits["conv.w"])
	if err != nil {
		t.Fatal(err)
	}
	b, err := onnxpb.Floats(inits["conv.b"])
	if err != nil {
		t.Fatal(err)
	}
	const C, H, W, M = 3, 6, 6, 4
	out := make([]float32, n*M)
	for s := 0; s < n; s++ {
		for o := 0; o < M; o++ {
			var sum float64
			for y := 0; y < H; y++ {
				for xx := 0; xx < W; xx++ {
					acc := float64(b[o])
					for c := 0; c < C; c++ {
						for ky := 0; ky < 3; ky++ {
							for kx := 0; kx < 3; kx++ {
								iy, ix := y+ky-1, xx+kx-1
								if iy < 0 || iy >= H || ix < 0 || ix >= W {
									continue
								}
								acc += float64(w[((o*C+c)*3+ky)*3+kx]) * float64(x[((s*C+c)*H+iy)*W+ix])
							}
						}
					}
					sum += math.Max(acc, 0)
				}
			}
			out[s*M+o] = float32(sum / (H * W))
		}
	}
	return out
}

func TestCutTinyMatchesReference(t *testing.T) {
	ortLib(t)
	m, err := onnxpb.Load(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	orig := onnxpb.Clone(m)
	cut, ci, err := Cut(m, "")
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(m, orig) {
		t.Error("Cut modified its input model")
	}
	want := CutInfo{Feature: "pooled", Dim: 4, InputName: "pixels", InputShape: [3]int{3, 6, 6}, Nodes: 3, Added: 1}
	if *ci != want {
		t.Errorf("CutInfo = %+v, want %+v", *ci, want)
	}
	if len(cut.Graph.ValueInfo) != 0 || len(cut.Graph.Initializer) != 2 {
		t.Errorf("cut keeps %d value_info and %d initializers, want 0 and 2 (conv.w, conv.b)",
			len(cut.Graph.ValueInfo), len(cut.Graph.Initializer))
	}
	data, err := onnxpb.Marshal(cut)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := ort.NewSession(data, ort.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for _, n := range []int{1, 3} {
		x := randomImages(uint64(n), n, 3, 6, 6)
		got := make([]float32, n*4)
		if err := sess.Run(x, n, got); err != nil {
			t.Fatalf("batch %d: %v", n, err)
		}
		ref := tinyReference(t, m, x, n)
		if d := testenv.MaxAbsDiff(got, ref); d > 1e-5 {
			t.Errorf("batch %d: max |ort - reference| = %g > 1e-5\nort %v\nref %v", n, d, got, ref)
		}
		zeros := 0
		for _, v := range ref {
			if v == 0 {
				zeros++
			}
		}
		if zeros == len(ref) {
			t.Errorf("batch %d: reference is all zero, the test would be vacuous", n)
		}
	}
}

func TestOpenTiny(t *testing.T) {
	ortLib(t)
	b, err := Open(tinyModel, Options{Feature: "flat", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if v := RuntimeVersion(); v == "" {
		t.Error("RuntimeVersion() is empty after Open")
	}
	if b.Dim() != 4 || b.InputShape() != [3]int{3, 6, 6} || b.CutInfo().Feature != "flat" || b.CutInfo().Added != 1 {
		t.Errorf("dim %d, input %v, cut %+v", b.Dim(), b.InputShape(), b.CutInfo())
	}
	auto, err := Open(tinyModel, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer auto.Close()
	if b.Hash() == auto.Hash() || len(b.Hash()) != 64 {
		t.Errorf("hashes for features flat and pooled: %s, %s; want distinct SHA-256 hex", b.Hash(), auto.Hash())
	}
	m, _ := onnxpb.Load(tinyModel)
	const n = 2
	x := randomImages(7, n, 3, 6, 6)
	got := make([]float32, n*4)
	if err := b.Features(x, n, got); err != nil {
		t.Fatal(err)
	}
	if d := testenv.MaxAbsDiff(got, tinyReference(t, m, x, n)); d > 1e-5 {
		t.Errorf("features of flat: max diff %g > 1e-5", d)
	}
	if err := b.Features(x[:10], n, got); err == nil {
		t.Error("Features accepted a short input")
	}
}

// TestCutUnpinsReshape cuts after a Reshape whose target hard-codes batch 1.
func TestCutUnpinsReshape(t *testing.T) {
	ortLib(t)
	g := &onnx.GraphProto{
		Name: "pinned",
		Node: []*onnx.NodeProto{
			onnxpb.Node("GlobalAveragePool", "pool", []string{"x"}, []string{"p"}),
			onnxpb.Node("Reshape", "reshape", []string{"p", "shape"}, []string{"vec"}),
			onnxpb.Node("Gemm", "fc", []string{"vec", "w"}, []string{"y"}, onnxpb.AttrInt("transB", 1)),
		},
		Initializer: []*onnx.TensorProto{
			onnxpb.Int64Tensor("shape", []int64{2}, []int64{1, -1}),
			onnxpb.FloatTensor("w", []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6}),
		},
		Input:  []*onnx.ValueInfoProto{onnxpb.ValueInfo("x", onnxpb.Float, 1, 3, 2, 2)},
		Output: []*onnx.ValueInfoProto{onnxpb.ValueInfo("y", onnxpb.Float, 1, 2)},
	}
	m := &onnx.ModelProto{IrVersion: 7, OpsetImport: []*onnx.OperatorSetIdProto{{Version: 12}}, Graph: g}
	cut, ci, err := Cut(m, "")
	if err != nil {
		t.Fatal(err)
	}
	if ci.Feature != "p" {
		t.Errorf("auto feature = %q, want the pooled tensor p", ci.Feature)
	}
	cut, ci, err = Cut(m, "vec")
	if err != nil {
		t.Fatal(err)
	}
	if ci.Dim != 3 || ci.Added != 1 {
		t.Errorf("cut at vec: %+v", ci)
	}
	data, _ := onnxpb.Marshal(cut)
	sess, err := ort.NewSession(data, ort.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	x := randomImages(3, 3, 3, 2, 2)
	got := make([]float32, 9)
	if err := sess.Run(x, 3, got); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 9; i++ {
		want := (x[4*i] + x[4*i+1] + x[4*i+2] + x[4*i+3]) / 4
		if math.Abs(float64(got[i]-want)) > 1e-6 {
			t.Fatalf("feature %d = %g, want channel mean %g", i, got[i], want)
		}
	}
}

// int8Reference runs the full original model with the pooled tensor added as a graph output and
// returns the dequantized pooled values (q - zero_point) * scale for n images.
func int8Reference(t *testing.T, m *onnx.ModelProto, x []float32, n int) []float32 {
	t.Helper()
	full := onnxpb.Clone(m)
	full.Graph.Output = append(full.Graph.Output, onnxpb.ValueInfo("464_quantized", onnxpb.Uint8, "batch_size", 1280, 1, 1))
	data, err := onnxpb.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := ortgo.NewDynamicAdvancedSessionWithONNXData(data, []string{"input"}, []string{"464_quantized"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Destroy()
	in, err := ortgo.NewTensor(ortgo.NewShape(int64(n), 3, 224, 224), x)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Destroy()
	outs := []ortgo.Value{nil}
	if err := sess.Run([]ortgo.Value{in}, outs); err != nil {
		t.Fatal(err)
	}
	defer outs[0].Destroy()
	q, ok := outs[0].(*ortgo.Tensor[uint8])
	if !ok {
		t.Fatalf("464_quantized came back as %T, want uint8 tensor", outs[0])
	}
	inits := onnxpb.Initializers(m.Graph)
	scale, _ := onnxpb.Floats(inits["464_scale"])
	zp, _ := onnxpb.Floats(inits["464_zero_point"])
	ref := make([]float32, len(q.GetData()))
	for i, v := range q.GetData() {
		ref[i] = (float32(v) - zp[0]) * scale[0]
	}
	return ref
}

func TestCutInt8MatchesFullModel(t *testing.T) {
	ortLib(t)
	path := int8Model(t)
	b, err := Open(path, Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ci := b.CutInfo()
	if ci.Feature != "464_quantized" || ci.Dim != 1280 || !ci.Quantized || ci.Scale != "464_scale" ||
		ci.ZeroPoint != "464_zero_point" || ci.InputName != "input" || ci.InputShape != [3]int{3, 224, 224} || ci.Added != 2 {
		t.Errorf("CutInfo = %+v", *ci)
	}
	const n, d = 5, 1280
	x := randomImages(11, n, 3, 224, 224)
	all := make([]float32, n*d)
	if err := b.Features(x, n, all); err != nil {
		t.Fatal(err)
	}
	nonzero := 0
	for i, v := range all {
		if v < 0 {
			t.Fatalf("feature %d = %g < 0 after ReLU6 + pooling", i, v)
		}
		if v != 0 {
			nonzero++
		}
	}
	if nonzero < n*d/10 {
		t.Errorf("only %d of %d features are non-zero", nonzero, n*d)
	}
	// The same images at batch 1 and 2 give the same rows.
	const img = 3 * 224 * 224
	for _, bs := range []int{1, 2} {
		for start := 0; start+bs <= n; start += bs {
			got := make([]float32, bs*d)
			if err := b.Features(x[start*img:(start+bs)*img], bs, got); err != nil {
				t.Fatal(err)
			}
			if diff := testenv.MaxAbsDiff(got, all[start*d:(start+bs)*d]); diff > 1e-5 {
				t.Errorf("batch %d at %d: max diff to batch %d = %g > 1e-5", bs, start, n, diff)
			}
		}
	}
	m, err := onnxpb.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ref := int8Reference(t, m, x, n)
	if diff := testenv.MaxAbsDiff(all, ref); diff > 1e-5 {
		t.Errorf("cut features vs dequantized 464_quantized of the full model: max diff %g > 1e-5", diff)
	}
	t.Logf("int8 cut: %d/%d non-zero features, max diff to full-model reference %g", nonzero, n*d, testenv.MaxAbsDiff(all, ref))
}
