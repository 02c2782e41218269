package onnxpb

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"
)

// TestConformanceModelsPassChecks loads every model of ONNX's own operator test cases (Debian's
// libonnx-testdata, 1072 models including If/Loop/Scan subgraphs): valid ONNX must pass
// Unmarshal's structural checks.
func TestConformanceModelsPassChecks(t *testing.T) {
	paths, _ := filepath.Glob("/usr/share/libonnx-testdata/data/*/*/model.onnx")
	if len(paths) == 0 {
		t.Skip("libonnx-testdata is not installed: run `make test` (it installs it)")
	}
	for _, p := range paths {
		if _, err := Load(p); err != nil {
			t.Errorf("valid model refused: %v", err)
		}
	}
}

// hostile returns tinyModel changed by edit, serialized.
func hostile(t *testing.T, edit func(m *onnx.ModelProto)) []byte {
	t.Helper()
	m := tinyModel()
	edit(m)
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUnmarshalHostileGraphs: malformed dataflow and absurd sizes are refused with an error that
// names the model, the node and the tensor, before anything is allocated for them.
func TestUnmarshalHostileGraphs(t *testing.T) {
	cases := []struct {
		name string
		edit func(m *onnx.ModelProto)
		is   error
		want []string
	}{
		{"dangling input", func(m *onnx.ModelProto) { m.Graph.Node[1].Input[0] = "ghost" }, ErrInvalid,
			[]string{`node "n" (Neg) reads "ghost"`, "dangling input"}},
		{"two-node cycle", func(m *onnx.ModelProto) {
			m.Graph.Node[0].Input[0] = "z" // r reads n's output, n reads r's
		}, ErrInvalid, []string{"cycle", `node "r" (Relu)`, `node "n" (Neg)`}},
		{"self loop", func(m *onnx.ModelProto) {
			m.Graph.Node = append(m.Graph.Node, Node("Add", "loop", []string{"q", "y"}, []string{"q"}))
		}, ErrInvalid, []string{`cycle: node "loop" (Add) -> node "loop" (Add)`}},
		{"two producers", func(m *onnx.ModelProto) { m.Graph.Node[1].Output[0] = "y" }, ErrInvalid,
			[]string{`tensor "y" is defined twice`}},
		{"output produced by nothing", func(m *onnx.ModelProto) { m.Graph.Output[0].Name = "nothing" }, ErrInvalid,
			[]string{`graph output "nothing" is produced by no node`}},
		{"huge initializer dims", func(m *onnx.ModelProto) {
			m.Graph.Initializer[0].Dims = []int64{1 << 40, 1 << 40} // overflows int64 when multiplied
		}, ErrTooLarge, []string{`initializer "w"`, "MaxTensorElements"}},
		{"negative initializer dim", func(m *onnx.ModelProto) { m.Graph.Initializer[0].Dims = []int64{-2} }, ErrInvalid,
			[]string{`initializer "w"`, "negative dim -2"}},
		{"huge declared input", func(m *onnx.ModelProto) {
			m.Graph.Input[0] = ValueInfo("x", Float, "batch", 1<<20, 1<<20, 1<<20)
		}, ErrTooLarge, []string{`value "x"`}},
		{"negative declared dim", func(m *onnx.ModelProto) { m.Graph.ValueInfo[0] = ValueInfo("y", Float, 1, -5) }, ErrInvalid,
			[]string{`value "y" declares the negative dim -5`}},
		{"huge Constant", func(m *onnx.ModelProto) {
			c := Node("Constant", "c", nil, []string{"k"})
			c.Attribute = []*onnx.AttributeProto{{Name: "value", Type: onnx.AttributeProto_TENSOR,
				T: &onnx.TensorProto{Name: "k", DataType: Float, Dims: []int64{math.MaxInt64}}}}
			m.Graph.Node = append([]*onnx.NodeProto{c}, m.Graph.Node...)
		}, ErrTooLarge, []string{`attribute "value" of node "c" (Constant)`}},
		{"subgraph reads an unknown name", func(m *onnx.ModelProto) {
			body := &onnx.GraphProto{Name: "then", Node: []*onnx.NodeProto{Node("Identity", "i", []string{"nowhere"}, []string{"o"})},
				Output: []*onnx.ValueInfoProto{ValueInfo("o", Float, 2)}}
			m.Graph.Node = append(m.Graph.Node, &onnx.NodeProto{OpType: "If", Name: "if", Input: []string{"z"}, Output: []string{"o2"},
				Attribute: []*onnx.AttributeProto{{Name: "then_branch", Type: onnx.AttributeProto_GRAPH, G: body}}})
		}, ErrInvalid, []string{`node "if" (If): subgraph "then": node "i" (Identity) reads "nowhere"`}},
		{"external data without a folder", func(m *onnx.ModelProto) {
			w := m.Graph.Initializer[0]
			w.FloatData, w.DataLocation = nil, onnx.TensorProto_EXTERNAL
			w.ExternalData = []*onnx.StringStringEntryProto{{Key: "location", Value: "w.bin"}}
		}, ErrExternalData, []string{`initializer "w" keeps its data in the external file "w.bin"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Unmarshal(hostile(t, tc.edit), "h.onnx")
			if !errors.Is(err, tc.is) {
				t.Fatalf("error %v does not wrap %v", err, tc.is)
			}
			for _, w := range append(tc.want, `"h.onnx"`) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	// A graph whose nodes are not in topological order but acyclic is valid (onnxruntime sorts).
	unsorted := hostile(t, func(m *onnx.ModelProto) { m.Graph.Node[0], m.Graph.Node[1] = m.Graph.Node[1], m.Graph.Node[0] })
	if _, err := Unmarshal(unsorted, "u.onnx"); err != nil {
		t.Errorf("unsorted acyclic graph refused: %v", err)
	}
}

// TestFloatsRefusesBeforeAllocating: a tensor declaring 2^62 elements with 8 bytes of data is an
// error, not a 16 EiB allocation or a makeslice panic.
func TestFloatsRefusesBeforeAllocating(t *testing.T) {
	for _, tp := range []*onnx.TensorProto{
		{Name: "big", DataType: Float, Dims: []int64{1 << 31, 1 << 31}, RawData: make([]byte, 8)},
		{Name: "wrap", DataType: Float, Dims: []int64{1 << 62, 4}, FloatData: []float32{1}},
		{Name: "neg", DataType: Int64, Dims: []int64{-1}, Int64Data: []int64{1}},
	} {
		if _, err := Floats(tp); err == nil || !strings.Contains(err.Error(), `"`+tp.Name+`"`) {
			t.Errorf("Floats(%s) = %v, want an error naming it", tp.Name, err)
		}
		if _, err := Int64s(tp); err == nil {
			t.Errorf("Int64s(%s) accepted", tp.Name)
		}
		if n := NumElements(tp); n != -1 {
			t.Errorf("NumElements(%s) = %d, want -1", tp.Name, n)
		}
	}
}

// externalModel writes a model whose initializer "w" (2 float32) lives in the external file loc
// at offset 4, and returns the model's path.
func externalModel(t *testing.T, dir, loc string, edit func(w *onnx.TensorProto)) string {
	t.Helper()
	m := tinyModel()
	w := m.Graph.Initializer[0]
	w.FloatData, w.DataLocation = nil, onnx.TensorProto_EXTERNAL
	w.ExternalData = []*onnx.StringStringEntryProto{{Key: "location", Value: loc}, {Key: "offset", Value: "4"}, {Key: "length", Value: "8"}}
	if edit != nil {
		edit(w)
	}
	p := filepath.Join(dir, "m.onnx")
	if err := SaveAtomic(p, m); err != nil {
		t.Fatal(err)
	}
	return p
}

func weightsFile(t *testing.T, path string) {
	t.Helper()
	b := make([]byte, 12)
	binary.LittleEndian.PutUint32(b[4:], math.Float32bits(1.5))
	binary.LittleEndian.PutUint32(b[8:], math.Float32bits(-2))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestExternalData: a plain relative location inside the model's folder (also through a symbolic
// link that stays inside) is read and inlined; locations that leave the folder, special files
// and bad ranges are refused with ErrExternalData naming the tensor and the location, and
// nothing outside the folder is read.
func TestExternalData(t *testing.T) {
	t.Run("inside the folder", func(t *testing.T) {
		for _, loc := range []string{"w.bin", "sub/w.bin", "./sub/../w.bin", "link.bin"} {
			dir := t.TempDir()
			weightsFile(t, filepath.Join(dir, "w.bin"))
			weightsFile(t, filepath.Join(dir, "sub", "w.bin"))
			if err := os.Symlink("sub/w.bin", filepath.Join(dir, "link.bin")); err != nil {
				t.Fatal(err)
			}
			m, err := Load(externalModel(t, dir, loc, nil))
			if err != nil {
				t.Fatalf("%s: %v", loc, err)
			}
			w := Initializers(m.Graph)["w"]
			got, err := Floats(w)
			if err != nil || len(got) != 2 || got[0] != 1.5 || got[1] != -2 || len(w.ExternalData) != 0 {
				t.Fatalf("%s: inlined weights %v, %v (external_data %v)", loc, got, err, w.ExternalData)
			}
		}
	})
	outside := t.TempDir()
	weightsFile(t, filepath.Join(outside, "secret.bin"))
	fifoDir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(fifoDir, "fifo.bin"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, loc string
		setup     func(dir string)
		edit      func(w *onnx.TensorProto)
		want      string
	}{
		{"parent folder", "../secret.bin", nil, nil, "must be a relative path inside the model's folder"},
		{"absolute path", filepath.Join(outside, "secret.bin"), nil, nil, "must be a relative path inside"},
		{"symlink out", "escape.bin", func(dir string) {
			os.Symlink(filepath.Join(outside, "secret.bin"), filepath.Join(dir, "escape.bin"))
		}, nil, "symbolic links must stay inside"},
		{"relative symlink out", "escape.bin", func(dir string) {
			rel, _ := filepath.Rel(dir, filepath.Join(outside, "secret.bin"))
			os.Symlink(rel, filepath.Join(dir, "escape.bin"))
		}, nil, "symbolic links must stay inside"},
		{"folder symlink out", "out/secret.bin", func(dir string) { os.Symlink(outside, filepath.Join(dir, "out")) }, nil,
			"symbolic links must stay inside"},
		{"missing file", "nope.bin", nil, nil, "no such file"},
		{"a folder", "sub", func(dir string) { os.Mkdir(filepath.Join(dir, "sub"), 0o755) }, nil, "not a regular file"},
		{"a fifo", "fifo.bin", func(dir string) { syscall.Mkfifo(filepath.Join(dir, "fifo.bin"), 0o644) }, nil, "not a regular file"},
		{"past the end", "w.bin", func(dir string) { weightsFile(t, filepath.Join(dir, "w.bin")) },
			func(w *onnx.TensorProto) { w.ExternalData[1].Value = "8" }, "past the end"},
		{"size mismatch", "w.bin", func(dir string) { weightsFile(t, filepath.Join(dir, "w.bin")) },
			func(w *onnx.TensorProto) { w.ExternalData[2].Value = "4" }, "holds 4 bytes, want 8"},
		{"bad offset", "w.bin", nil, func(w *onnx.TensorProto) { w.ExternalData[1].Value = "-1" }, `offset "-1" is not a non-negative integer`},
		{"no location", "", nil, nil, "has no location"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.setup != nil {
				tc.setup(dir)
			}
			_, err := Load(externalModel(t, dir, tc.loc, tc.edit))
			if !errors.Is(err, ErrExternalData) || !strings.Contains(err.Error(), `initializer "w"`) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrExternalData naming the tensor and saying %q", err, tc.want)
			}
		})
	}
}
