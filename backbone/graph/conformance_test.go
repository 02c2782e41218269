package graph

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// onnxTestData is where Debian's libonnx-testdata installs ONNX's test cases: per-operator
// cases (node) and small PyTorch-exported modules (pytorch-converted, pytorch-operator), which
// cover grouped, depthwise and dilated convolutions.
const onnxTestData = "/usr/share/libonnx-testdata/data"

var onnxTestSuites = []string{"node", "pytorch-converted", "pytorch-operator"}

// Conformance tolerance: |got − want| ≤ confTol · max(1, |want|).
const confTol = 1e-4

func readTensorFile(t *testing.T, path string) *onnx.TensorProto {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tp onnx.TensorProto
	if err := proto.Unmarshal(b, &tp); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &tp
}

// confCase runs one ONNX node test folder: input 0 (and every later input with the same shape)
// is a From activation, the other inputs become initializers (constants or parameters); the
// model's single output is To. It returns a skip reason for unsupported features.
func confCase(t *testing.T, dir string) (skip string, err error) {
	m, err := onnxpb.Load(filepath.Join(dir, "model.onnx"))
	if err != nil {
		return "", err
	}
	g := m.Graph
	if len(g.Output) != 1 {
		return fmt.Sprintf("%d outputs", len(g.Output)), nil
	}
	ds := filepath.Join(dir, "test_data_set_0")
	var opts Options
	var inputs [][]float32
	batch := 0
	var first []int64
	var keep []*onnx.ValueInfoProto
	for i, vi := range onnxpb.RealInputs(g) {
		if vi.GetType().GetTensorType() == nil {
			return fmt.Sprintf("input %q is not a tensor", vi.GetName()), nil
		}
		tp := readTensorFile(t, filepath.Join(ds, fmt.Sprintf("input_%d.pb", i)))
		tp.Name = vi.GetName()
		if i == 0 {
			first = tp.Dims
		}
		if len(tp.Dims) > 0 && tp.DataType == onnxpb.Float && (i == 0 || fmt.Sprint(tp.Dims) == fmt.Sprint(first)) {
			f, err := onnxpb.Floats(tp)
			if err != nil {
				return "", err
			}
			opts.From = append(opts.From, vi.GetName())
			inputs = append(inputs, f)
			batch = int(tp.Dims[0])
			keep = append(keep, vi)
			continue
		}
		if i == 0 {
			return fmt.Sprintf("input 0 is %s of shape %v", onnxpb.DTypeName(tp.DataType), tp.Dims), nil
		}
		g.Initializer = append(g.Initializer, tp)
	}
	g.Input = keep
	opts.To = g.Output[0].GetName()
	opts.Trainable = true
	gr, err := Decode(m, opts)
	if errors.Is(err, ErrUnsupported) {
		return err.Error(), nil
	}
	if err != nil {
		return "", err
	}
	st, err := newStepper[float32](gr, batch)
	if err != nil {
		return "", err
	}
	// The backward pass runs on every case too (its values are checked in grad_test.go).
	gy := make([]float32, 0, 64)
	got, _, err := st.step(inputs, nil)
	if err != nil {
		return "", err
	}
	for range got {
		gy = append(gy, 1)
	}
	if _, _, err := st.step(inputs, gy); err != nil {
		return "", fmt.Errorf("backward: %w", err)
	}
	wt := readTensorFile(t, filepath.Join(ds, "output_0.pb"))
	want, err := onnxpb.Floats(wt)
	if err != nil {
		return "", err
	}
	oshape := st.y.Shape()
	if len(wt.Dims) == 0 {
		oshape = nil // a scalar is a [1] tensor in gorgonia
	}
	if fmt.Sprint([]int(oshape)) != fmt.Sprint(dimsOf(wt)) || len(got) != len(want) {
		return "", fmt.Errorf("output shape %v, want %v", oshape, wt.Dims)
	}
	for i := range want {
		if d := math.Abs(float64(got[i] - want[i])); !(d <= confTol*math.Max(1, math.Abs(float64(want[i])))) {
			return "", fmt.Errorf("output[%d] = %g, want %g", i, got[i], want[i])
		}
	}
	return "", nil
}

// TestONNXConformance runs every ONNX node test case that contains a supported op, against the
// reference outputs (test_data_set_0), to 1e-4 (relative above 1). Cases needing features
// Decode refuses (other dtypes, 3-D windows, training mode, extra outputs) are skipped and
// counted; any other failure fails the test.
func TestONNXConformance(t *testing.T) {
	if _, err := os.Stat(filepath.Join(onnxTestData, "node")); err != nil {
		t.Skipf("ONNX test data not found at %s: apt-get install libonnx-testdata (make test does it)", onnxTestData)
	}
	var dirs []string
	for _, suite := range onnxTestSuites {
		d, err := filepath.Glob(filepath.Join(onnxTestData, suite, "test_*"))
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d...)
	}
	type tally struct {
		passed, attempted int
		skipped           []string
	}
	byOp := map[string]*tally{}
	for op := range supportedOps {
		byOp[op] = &tally{}
	}
	for _, dir := range dirs {
		m, err := onnxpb.Load(filepath.Join(dir, "model.onnx"))
		if err != nil {
			continue
		}
		ops := map[string]bool{}
		all := true
		for _, n := range m.Graph.Node {
			if supportedOps[n.OpType] && (n.Domain == "" || n.Domain == "ai.onnx") {
				ops[n.OpType] = true
			} else if n.OpType != "Constant" {
				all = false
			}
		}
		if len(ops) == 0 || !all {
			continue // no supported op, or also needs unsupported ops (e.g. *_expanded)
		}
		name := filepath.Base(filepath.Dir(dir)) + "/" + filepath.Base(dir)
		skip, err := confCase(t, dir)
		for op := range ops {
			tl := byOp[op]
			if skip != "" {
				tl.skipped = append(tl.skipped, name)
				continue
			}
			tl.attempted++
			if err == nil {
				tl.passed++
			}
		}
		switch {
		case skip != "":
			t.Logf("skip %s: %s", name, skip)
		case err != nil:
			t.Errorf("%s: %v", name, err)
		}
	}
	names := make([]string, 0, len(byOp))
	for op := range byOp {
		names = append(names, op)
	}
	sort.Strings(names)
	total, passed := 0, 0
	for _, op := range names {
		tl := byOp[op]
		total += tl.attempted
		passed += tl.passed
		extra := ""
		if len(tl.skipped) > 0 {
			extra = fmt.Sprintf("  (skipped %d: %s)", len(tl.skipped), strings.Join(tl.skipped, " "))
		}
		t.Logf("%-20s %3d/%-3d%s", op, tl.passed, tl.attempted, extra)
	}
	t.Logf("total %d/%d cases", passed, total)
	if total == 0 {
		t.Fatal("no conformance case was attempted")
	}
}

// TestLpNormalizationORT compares LpNormalization (p = 1, 2; several axes), which has no ONNX
// node test case, with onnxruntime, to 1e-5.
func TestLpNormalizationORT(t *testing.T) {
	ortLib(t)
	r := newRand(9)
	for _, c := range []struct{ axis, p int64 }{{1, 2}, {-1, 2}, {2, 1}, {1, 1}} {
		m := testModel(13, map[string][]int{"x": {3, 4, 5}}, nil,
			onnxpb.Node("LpNormalization", "lp", []string{"x"}, []string{"y"}, onnxpb.AttrInt("axis", c.axis), onnxpb.AttrInt("p", c.p)))
		m.Graph.Input[0] = onnxpb.ValueInfo("x", onnxpb.Float, "batch", 4, 5)
		m.Graph.Output[0] = onnxpb.ValueInfo("y", onnxpb.Float, "batch", 4, 5)
		b, err := onnxpb.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ort.NewSession(b, ort.Options{})
		if err != nil {
			t.Fatal(err)
		}
		x := make([]float32, 60)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		want := make([]float32, 60)
		if err := s.Run(x, 3, want); err != nil {
			t.Fatal(err)
		}
		s.Close()
		g, err := Decode(m, Options{From: []string{"x"}, To: "y", InputShapes: [][]int{{4, 5}}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := g.Infer([][]float32{x}, 3)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-5 {
				t.Fatalf("axis %d p %d: y[%d] = %g, onnxruntime %g", c.axis, c.p, i, got[i], want[i])
			}
		}
	}
}
