package pipeline

import (
	"context"
	"fmt"
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/export"
)

// blackImages writes n all-black 6x6 PNGs as one class of an image folder and loads it.
func blackImages(t *testing.T, n int) *data.Dataset {
	return pngClass(t, "black", n, func(*image.RGBA) {})
}

// noiseImages writes n 6x6 PNGs of seeded random pixels as one class of an image folder and loads it.
func noiseImages(t *testing.T, n int) *data.Dataset {
	r := rand.New(rand.NewPCG(1, 2))
	return pngClass(t, "noise", n, func(img *image.RGBA) {
		for j := range img.Pix {
			img.Pix[j] = uint8(r.IntN(256))
		}
	})
}

// pngClass writes n 6x6 PNGs, each drawn by paint on a black image, as the class folder of an
// image folder, and loads it.
func pngClass(t *testing.T, class string, n int, paint func(*image.RGBA)) *data.Dataset {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, class)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		img := image.NewRGBA(image.Rect(0, 0, 6, 6))
		paint(img)
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%02d.png", i)))
		if err != nil {
			t.Fatal(err)
		}
		if err := png.Encode(f, img); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	ds, err := data.Load(root)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// allImages is every image of ds, preprocessed to 6x6.
func allImages(ds *data.Dataset) ImageSet {
	pre := data.DefaultPreprocess()
	pre.Width, pre.Height = 6, 6
	set := ImageSet{DS: ds, Pre: pre, Workers: 1}
	for i := range ds.Items {
		set.Items = append(set.Items, i)
	}
	return set
}

// embedsFinite runs the model in onnxruntime on two test images and fails unless it loads, runs
// and gives finite embeddings.
func embedsFinite(t *testing.T, m *onnx.ModelProto, what string) {
	t.Helper()
	b, err := onnxpb.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := ort.NewSession(b, ort.Options{Threads: 1})
	if err != nil {
		t.Fatalf("%s: onnxruntime: %v", what, err)
	}
	defer sess.Close()
	x := make([]float32, 2*3*6*6)
	for i := range x {
		x[i] = float32(i%7) - 3
	}
	out := make([]float32, 2*int(sess.OutputShape()[0]))
	if err := sess.Run(x, 2, out); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for _, v := range out {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("%s: embeddings %v", what, out)
		}
	}
}

// tinyExport is the exported model of the 6x6 test CNN (Conv, Relu, pooling) with the mirror pass;
// deadBias makes the Conv's bias so negative that the Relu outputs only zeros.
func tinyExport(t *testing.T, deadBias bool) *onnx.ModelProto {
	t.Helper()
	m, err := onnxpb.Load("../backbone/testdata/tiny_cnn.onnx")
	if err != nil {
		t.Fatal(err)
	}
	return exportOf(t, m, deadBias)
}

// tinyPointwiseExport is tinyExport with a 1x1 Conv (4 -> 4 channels) between the tiny CNN's Relu
// and its pooling.
func tinyPointwiseExport(t *testing.T) *onnx.ModelProto {
	t.Helper()
	m, err := onnxpb.Load("../backbone/testdata/tiny_cnn.onnx")
	if err != nil {
		t.Fatal(err)
	}
	g := m.Graph
	var nodes []*onnx.NodeProto
	for _, n := range g.Node {
		if n.GetOpType() == "GlobalAveragePool" {
			nodes = append(nodes, onnxpb.Node("Conv", "pointwise", []string{n.Input[0], "pointwise.w"}, []string{"pointwise_out"}))
			n.Input[0] = "pointwise_out"
		}
		nodes = append(nodes, n)
	}
	g.Node = nodes
	w := make([]float32, 16)
	for i := range w {
		w[i] = float32(math.Sin(float64(3*i+1))) * 0.7
	}
	g.Initializer = append(g.Initializer, onnxpb.FloatTensor("pointwise.w", []int64{4, 4, 1, 1}, w))
	g.ValueInfo = nil
	return exportOf(t, m, false)
}

// exportOf is the exported model of backbone m (see tinyExport).
func exportOf(t *testing.T, m *onnx.ModelProto, deadBias bool) *onnx.ModelProto {
	t.Helper()
	if deadBias {
		inits := onnxpb.Initializers(m.Graph)
		for _, n := range m.Graph.Node {
			if n.GetOpType() == "Conv" && len(n.Input) > 2 {
				b := inits[n.Input[2]]
				v, _ := onnxpb.Floats(b)
				for i := range v {
					v[i] = -1000
				}
				*b = *onnxpb.FloatTensor(b.GetName(), b.GetDims(), v)
			}
		}
	}
	cut, ci, err := backbone.Cut(m, "")
	if err != nil {
		t.Fatal(err)
	}
	e, err := export.Build(cut, ci, []export.Layer{export.FlipAverage{}, export.L2Normalize{}}, export.Metadata{SourceSHA256: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestInt8HostileCalibration: all-black calibration images that leave an activation at a single
// value, and a single calibration image, give finite positive scales, a model onnxruntime loads
// and runs to finite embeddings, and a warning saying what is wrong.
func TestInt8HostileCalibration(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		images   int
		deadBias bool
		warn     string
	}{
		{"all black, dead activations", 3, true, "took a single value on the 3 calibration images"},
		{"one image", 1, false, "calibrating on 1 images only"},
	} {
		cal := allImages(blackImages(t, tc.images))
		for _, method := range export.CalibrationMethods {
			q, info, err := MakeVariant(context.Background(), tinyExport(t, tc.deadBias),
				VariantOptions{Int8: true, FlipTTA: true, ReduceRange: config.ReduceRangeOn, Calibration: config.Calibration(method), Threads: 1}, cal)
			if err != nil {
				t.Fatalf("%s, %s: %v", tc.name, method, err)
			}
			if !strings.Contains(strings.Join(info.Warnings, "\n"), tc.warn) {
				t.Errorf("%s, %s: warnings %q, want one with %q", tc.name, method, info.Warnings, tc.warn)
			}
			for _, init := range q.Graph.Initializer {
				if !strings.HasSuffix(init.GetName(), "_scale") {
					continue
				}
				v, err := onnxpb.Floats(init)
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range v {
					if !(s > 0) || math.IsInf(float64(s), 0) {
						t.Fatalf("%s, %s: %s = %v", tc.name, method, init.GetName(), v)
					}
				}
			}
			b, err := onnxpb.Marshal(q)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := onnxpb.Unmarshal(b, "int8"); err != nil {
				t.Fatalf("%s: our checks: %v", tc.name, err)
			}
			embedsFinite(t, q, tc.name+", "+method)
		}
	}
}

// TestVariantDescribe: the one-line description names what the file computes in int8.
func TestVariantDescribe(t *testing.T) {
	for _, c := range []struct {
		v    ExportVariant
		want string
	}{
		{ExportVariant{FloatConvs: 52}, "float, without the mirror pass"},
		{ExportVariant{FlipTTA: true, Int8Nodes: 50, FloatConvs: 10}, "float after the backbone's int8 layers, with the mirror pass"},
		{ExportVariant{Int8: true, Calibration: "percentile", ReduceRange: true, Int8Nodes: 62}, "int8 (percentile calibration, 7-bit weights), without"},
		{ExportVariant{Int8: true, Calibration: "minmax", WeightRounding: "gptq", BiasCorrected: true, FeatureShift: 0.1834},
			"int8 (minmax calibration, gptq rounding, bias-corrected: mean shift 0.183), without"},
	} {
		if got := c.v.Describe(); !strings.HasPrefix(got, c.want) {
			t.Errorf("%+v: %q, want it to start with %q", c.v, got, c.want)
		}
	}
}

// TestInt8BiasCorrection: with bias correction the int8 model's features average, over the
// calibration images, what the float model's do (without it they do not: the shift is there to
// correct); the metadata says so, and with the mirror pass the correction comes before the
// features are averaged (its Add writes the features the mirror pass reads).
func TestInt8BiasCorrection(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	cal := allImages(noiseImages(t, 24))
	ctx := context.Background()
	plain, err := export.SetFlip(tinyExport(t, false), false)
	if err != nil {
		t.Fatal(err)
	}
	want, err := featureMean(ctx, plain, 1, cal)
	if err != nil {
		t.Fatal(err)
	}
	// gap is the largest |float mean - int8 mean| over the features, relative to the largest |float mean|.
	gap := func(q *onnx.ModelProto) float64 {
		got, err := featureMean(ctx, q, 1, cal)
		if err != nil {
			t.Fatal(err)
		}
		var d, s float64
		for i := range want {
			d, s = math.Max(d, math.Abs(got[i]-want[i])), math.Max(s, math.Abs(want[i]))
		}
		return d / s
	}
	variant := func(bias bool, flip bool) (*onnx.ModelProto, *VariantInfo) {
		q, info, err := MakeVariant(ctx, tinyExport(t, false), VariantOptions{Int8: true, FlipTTA: flip, ReduceRange: config.ReduceRangeOn,
			Calibration: config.CalibrationMinMax, BiasCorrection: &bias, Threads: 1}, cal)
		if err != nil {
			t.Fatal(err)
		}
		return q, info
	}
	q, info := variant(false, false)
	if info.BiasCorrected || metaValue(q, export.MetaBiasCorrection) != "" {
		t.Errorf("bias correction off: info %+v, metadata %q", info, metaValue(q, export.MetaBiasCorrection))
	}
	off := gap(q)
	if off < 1e-3 {
		t.Fatalf("without bias correction the int8 features' mean is already the float one (gap %.2g): the test shows nothing", off)
	}
	q, info = variant(true, false)
	if g := gap(q); g > 1e-5 {
		t.Errorf("bias-corrected: features' mean off by %.2g of the float mean (uncorrected %.2g), want < 1e-5", g, off)
	}
	if !info.BiasCorrected || !(info.FeatureShift > 0) || !strings.Contains(metaValue(q, export.MetaBiasCorrection), "24 calibration images") {
		t.Errorf("bias-corrected: info %+v, metadata %q", info, metaValue(q, export.MetaBiasCorrection))
	}
	q, _ = variant(true, true)
	prod := onnxpb.Producers(q.Graph)[backbone.OutputName]
	readers := onnxpb.Consumers(q.Graph)[backbone.OutputName]
	if prod == nil || !strings.HasSuffix(prod.GetName(), "_BiasCorrection") || len(readers) != 1 || !strings.Contains(readers[0].GetName(), ".flip.") {
		t.Fatalf("with the mirror pass: %q is written by %v and read by %v, want the correction's Add and the mirror pass", backbone.OutputName, prod, readers)
	}
	embedsFinite(t, q, "bias-corrected, with the mirror pass")
}

// metaValue is the model's metadata value for key, or "".
func metaValue(m *onnx.ModelProto, key string) string {
	for _, p := range m.GetMetadataProps() {
		if p.GetKey() == key {
			return p.GetValue()
		}
	}
	return ""
}

// TestInt8WeightRounding: with export.weight_rounding gptq the 1x1 Conv (and only it: the 3x3 one
// is rounded to nearest) gets its weights rounded with error feedback on the moments gathered in
// the calibration pass, said in the variant's info and metadata; the model runs in onnxruntime.
// nearest rounds both to nearest.
func TestInt8WeightRounding(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	cal := allImages(noiseImages(t, 24))
	for _, tc := range []struct {
		rounding config.WeightRounding
		feedback int
		meta     string
	}{
		{config.WeightRoundingGPTQ, 1, "gptq: 1 of 2 Convs"},
		{config.WeightRoundingNearest, 0, "nearest"},
		{"", 0, "nearest"},
	} {
		q, info, err := MakeVariant(context.Background(), tinyPointwiseExport(t), VariantOptions{Int8: true, FlipTTA: true, ReduceRange: config.ReduceRangeOn,
			Calibration: config.CalibrationMinMax, WeightRounding: tc.rounding, Threads: 1}, cal)
		if err != nil {
			t.Fatalf("%q: %v", tc.rounding, err)
		}
		if info.Report.ErrorFeedback != tc.feedback || info.Report.Conv != 2 || !strings.HasPrefix(metaValue(q, export.MetaRounding), tc.meta) {
			t.Errorf("%q: %d Convs with error feedback of %d, metadata %q; want %d, %q", tc.rounding, info.Report.ErrorFeedback, info.Report.Conv,
				metaValue(q, export.MetaRounding), tc.feedback, tc.meta)
		}
		embedsFinite(t, q, "weight rounding "+string(tc.rounding))
	}
}
