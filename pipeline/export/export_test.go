package export

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/testenv"
	"google.golang.org/protobuf/proto"
)

const tinyModel = "../../backbone/testdata/tiny_cnn.onnx"

func ortLib(t *testing.T) {
	t.Helper()
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
}

func int8Model(t *testing.T) string { return testenv.Int8Model(t) }

func randFloats(r *rand.Rand, n int, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32((r.Float64()*2 - 1) * scale)
	}
	return x
}

// applyHead computes the head and the final L2 normalization in float64 on [n, d] features.
func applyHead(feats []float32, n, d int, head []Layer) ([]float32, int) {
	x := make([]float64, len(feats))
	for i, v := range feats {
		x[i] = float64(v)
	}
	l2 := func(x []float64, d int) {
		for r := 0; r < n; r++ {
			row := x[r*d : (r+1)*d]
			var s float64
			for _, v := range row {
				s += v * v
			}
			s = math.Max(math.Sqrt(s), 1e-12)
			for i := range row {
				row[i] /= s
			}
		}
	}
	for _, l := range head {
		switch l := deref(l).(type) {
		case Center:
			for r := 0; r < n; r++ {
				for j := 0; j < d; j++ {
					x[r*d+j] -= float64(l.Mean[j])
				}
			}
		case L2Normalize:
			l2(x, d)
		case Linear:
			y := make([]float64, n*l.Out)
			for r := 0; r < n; r++ {
				for o := 0; o < l.Out; o++ {
					s := float64(l.B[o])
					for i := 0; i < l.In; i++ {
						s += float64(l.W[o*l.In+i]) * x[r*d+i]
					}
					y[r*l.Out+o] = s
				}
			}
			x, d = y, l.Out
		case ReLU:
			for i := range x {
				x[i] = math.Max(x[i], 0)
			}
		}
	}
	l2(x, d)
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out, d
}

// roundTrip exports b with head, reloads the file in onnxruntime and compares its embeddings
// with applyHead on b's features for n random images.
func roundTrip(t *testing.T, b *backbone.Backbone, head []Layer, n int) {
	t.Helper()
	cutBefore := onnxpb.Clone(b.Cut())
	path := filepath.Join(t.TempDir(), "embed.onnx")
	meta := Metadata{
		Preprocess:   map[string]string{"size": "224", "resize": "256", "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225", "preprocess.channel_order": "RGB", "scale": "1/255"},
		ToolVersion:  "test-1.0",
		SourceSHA256: b.Info().SHA256,
	}
	if err := Write(path, b.Cut(), b.CutInfo(), head, meta); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(cutBefore, b.Cut()) {
		t.Error("Write modified the cut model")
	}
	info, err := backbone.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	c, h, w := b.InputShape()[0], b.InputShape()[1], b.InputShape()[2]
	_, wantDim := applyHead(make([]float32, b.Dim()), 1, b.Dim(), head)
	if len(info.Inputs) != 1 || info.Inputs[0].Name != "images" || info.Inputs[0].ShapeString() != shapeStr("batch", c, h, w) ||
		len(info.Outputs) != 1 || info.Outputs[0].Name != "embeddings" || info.Outputs[0].ShapeString() != shapeStr("batch", wantDim) ||
		info.Outputs[0].DType != "float32" {
		t.Errorf("exported I/O: %+v -> %+v", info.Inputs, info.Outputs)
	}
	for k, v := range map[string]string{
		"preprocess.size": "224", "preprocess.resize": "256", "preprocess.mean": "0.485,0.456,0.406",
		"preprocess.std": "0.229,0.224,0.225", "preprocess.channel_order": "RGB", "preprocess.scale": "1/255",
		"embedding_dim": itoa(wantDim), "tool_version": "test-1.0", "feature_tensor": b.CutInfo().Feature,
		"source_model_sha256": b.Info().SHA256,
	} {
		if info.Metadata[k] != v {
			t.Errorf("metadata %s = %q, want %q", k, info.Metadata[k], v)
		}
	}
	src, _ := backbone.Inspect(b.Info().Path)
	if !reflect.DeepEqual(info.Opsets, src.Opsets) {
		t.Errorf("opsets %v, want the source's %v", info.Opsets, src.Opsets)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := ort.NewSession(data, ort.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	r := rand.New(rand.NewPCG(uint64(n), 9))
	imgs := randFloats(r, n*c*h*w, 2)
	got := make([]float32, n*wantDim)
	if err := sess.Run(imgs, n, got); err != nil {
		t.Fatal(err)
	}
	feats := make([]float32, n*b.Dim())
	if err := b.Features(imgs, n, feats); err != nil {
		t.Fatal(err)
	}
	want, _ := applyHead(feats, n, b.Dim(), head)
	var maxDiff float64
	for i := range want {
		maxDiff = math.Max(maxDiff, math.Abs(float64(got[i]-want[i])))
	}
	if maxDiff > 1e-5 {
		t.Errorf("exported model vs Go head on cut features: max |diff| = %g > 1e-5", maxDiff)
	}
	for row := 0; row < n; row++ {
		var s float64
		for _, v := range got[row*wantDim : (row+1)*wantDim] {
			s += float64(v) * float64(v)
		}
		if math.Abs(math.Sqrt(s)-1) > 1e-5 {
			t.Errorf("row %d has norm %g, want 1", row, math.Sqrt(s))
		}
	}
	t.Logf("%s: D=%d -> D'=%d, batch %d, max diff %.3g", filepath.Base(b.Info().Path), b.Dim(), wantDim, n, maxDiff)
}

func shapeStr(batch string, dims ...int) string {
	parts := []string{batch}
	for _, d := range dims {
		parts = append(parts, itoa(d))
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestExportTinyRoundTrip(t *testing.T) {
	ortLib(t)
	b, err := backbone.Open(tinyModel, backbone.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r := rand.New(rand.NewPCG(1, 2))
	head := []Layer{
		Center{Mean: randFloats(r, 4, 0.2)},
		L2Normalize{},
		&Linear{In: 4, Out: 3, W: randFloats(r, 12, 1), B: randFloats(r, 3, 0.1)},
	}
	for _, n := range []int{1, 3} {
		roundTrip(t, b, head, n)
	}
	roundTrip(t, b, []Layer{ReLU{}}, 2)
}

func TestExportInt8RoundTrip(t *testing.T) {
	ortLib(t)
	b, err := backbone.Open(int8Model(t), backbone.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r := rand.New(rand.NewPCG(3, 4))
	head := []Layer{&Linear{In: 1280, Out: 64, W: randFloats(r, 1280*64, 0.05), B: randFloats(r, 64, 0.1)}}
	roundTrip(t, b, head, 2)
}

func TestBuildErrors(t *testing.T) {
	cut, ci := tinyCut(t)
	meta := Metadata{SourceSHA256: "abc"}
	cases := []struct {
		name string
		head []Layer
		meta Metadata
		want string
	}{
		{"linear in", []Layer{Linear{In: 5, Out: 2, W: make([]float32, 10)}}, meta, "head layer 0 (Linear 5x2)"},
		{"linear w", []Layer{Linear{In: 4, Out: 2, W: make([]float32, 7)}}, meta, "W has 7 values"},
		{"linear bias", []Layer{Linear{In: 4, Out: 2, W: make([]float32, 8), B: []float32{1}}}, meta, "bias has 1 values, want 2"},
		{"center", []Layer{ReLU{}, Center{Mean: []float32{1}}}, meta, "head layer 1 (Center): mean has 1 values, want 4"},
		{"no sha", nil, Metadata{}, "no source model SHA-256"},
	}
	for _, tc := range cases {
		if _, err := Build(cut, ci, tc.head, tc.meta); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error = %v, want %q", tc.name, err, tc.want)
		}
	}
	bad := *ci
	bad.InputName = "other"
	if _, err := Build(cut, &bad, nil, meta); err == nil || !strings.Contains(err.Error(), `input "other"`) {
		t.Errorf("mismatched cut info: %v", err)
	}
	// No bias: Gemm gets zeros; the structure is input -> cut -> Gemm -> LpNormalization.
	out, err := Build(cut, ci, []Layer{Linear{In: 4, Out: 2, W: make([]float32, 8)}}, meta)
	if err != nil {
		t.Fatal(err)
	}
	nodes := out.Graph.Node
	if last := nodes[len(nodes)-1]; last.OpType != "LpNormalization" || last.Output[0] != "embeddings" ||
		nodes[len(nodes)-2].OpType != "Gemm" || onnxpb.AttrIntOr(nodes[len(nodes)-2], "transB", 0) != 1 {
		t.Errorf("tail nodes: %v, %v", nodes[len(nodes)-2], last)
	}
	for _, n := range nodes {
		for _, in := range n.Input {
			if in == ci.InputName {
				t.Errorf("node %q still reads the old input %q", n.Name, in)
			}
		}
	}
}

// TestExportFlipAverage checks the test-time flip layer: the exported model's embedding of an
// image is the head applied to the mean of the backbone features of the image and its mirror.
func TestExportFlipAverage(t *testing.T) {
	ortLib(t)
	for _, tc := range []struct {
		model string
		n     int
	}{{tinyModel, 3}, {int8Model(t), 2}} {
		b, err := backbone.Open(tc.model, backbone.Options{Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		d := b.Dim()
		r := rand.New(rand.NewPCG(5, 6))
		rest := []Layer{L2Normalize{}, Linear{In: d, Out: 8, W: randFloats(r, d*8, 0.3), B: randFloats(r, 8, 0.1)}}
		path := filepath.Join(t.TempDir(), "flip.onnx")
		meta := Metadata{ToolVersion: "test", SourceSHA256: b.Info().SHA256}
		if err := Write(path, b.Cut(), b.CutInfo(), append([]Layer{FlipAverage{}}, rest...), meta); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sess, err := ort.NewSession(data, ort.Options{Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		c, h, w := b.InputShape()[0], b.InputShape()[1], b.InputShape()[2]
		imgs := randFloats(r, tc.n*c*h*w, 2)
		mirror := make([]float32, len(imgs))
		for row := 0; row < tc.n*c*h; row++ {
			for x := 0; x < w; x++ {
				mirror[row*w+w-1-x] = imgs[row*w+x]
			}
		}
		f1, f2 := make([]float32, tc.n*d), make([]float32, tc.n*d)
		if err := b.Features(imgs, tc.n, f1); err != nil {
			t.Fatal(err)
		}
		if err := b.Features(mirror, tc.n, f2); err != nil {
			t.Fatal(err)
		}
		var asym float64
		for i := range f1 {
			asym = math.Max(asym, math.Abs(float64(f1[i]-f2[i])))
			f1[i] = (f1[i] + f2[i]) / 2
		}
		if asym == 0 {
			t.Fatal("mirrored images gave identical features: the test cannot tell flip averaging from none")
		}
		want, dim := applyHead(f1, tc.n, d, rest)
		got := make([]float32, tc.n*dim)
		if err := sess.Run(imgs, tc.n, got); err != nil {
			t.Fatal(err)
		}
		var maxDiff float64
		for i := range want {
			maxDiff = math.Max(maxDiff, math.Abs(float64(got[i]-want[i])))
		}
		if maxDiff > 1e-5 {
			t.Errorf("%s: flip-averaged export differs from Go by %g", filepath.Base(tc.model), maxDiff)
		}
	}
}
