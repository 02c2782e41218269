package backbone

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/internal/onnxpb"
)

func TestInspectBadFiles(t *testing.T) {
	dir := t.TempDir()
	tiny, err := os.ReadFile(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 4096)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name string
		path string
		is   error
		want string
	}{
		{"missing", filepath.Join(dir, "nope.onnx"), fs.ErrNotExist, "does not exist"},
		{"empty", write("empty.onnx", nil), onnxpb.ErrInvalid, "is empty"},
		{"truncated", write("truncated.onnx", tiny[:len(tiny)/2]), onnxpb.ErrInvalid, "cannot be parsed as ONNX protobuf"},
		{"random", write("random.onnx", random), onnxpb.ErrInvalid, "cannot be parsed as ONNX protobuf"},
		{"text", write("text.onnx", []byte("hello, this is not a model\n")), onnxpb.ErrInvalid, ""},
		{"directory", dir, onnxpb.ErrInvalid, "is a directory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Inspect(tc.path)
			if err == nil {
				t.Fatal("Inspect succeeded")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "backbone: ") || !strings.Contains(msg, tc.path) || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q should start with \"backbone: \" and name %q and say %q", msg, tc.path, tc.want)
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %q does not wrap %v", msg, tc.is)
			}
		})
	}
}

func TestInspectTooLarge(t *testing.T) {
	old := onnxpb.MaxModelBytes
	onnxpb.MaxModelBytes = 100
	defer func() { onnxpb.MaxModelBytes = old }()
	_, err := Inspect(tinyModel)
	if !errors.Is(err, onnxpb.ErrTooLarge) || !strings.Contains(err.Error(), tinyModel) {
		t.Errorf("error = %v, want ErrTooLarge naming %s", err, tinyModel)
	}
}

func TestCutUnknownFeature(t *testing.T) {
	m, err := onnxpb.Load(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ feature, want string }{
		{"x", `backbone: feature tensor "x" is not produced by any node in graph "tiny_cnn"; candidates: "pooled" (auto), "flat"`},
		{"pixels", `backbone: feature tensor "pixels" is not produced by any node in graph "tiny_cnn"`},
		{"conv.w", `feature tensor "conv.w" is not produced by any node`},
	}
	for _, tc := range cases {
		_, _, err := Cut(m, tc.feature)
		var fe *FeatureError
		if !errors.As(err, &fe) || fe.Tensor != tc.feature || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Cut(%q) error = %v, want a FeatureError containing %q", tc.feature, err, tc.want)
		}
	}
}

func TestOpenUnknownFeatureNamesFile(t *testing.T) {
	ortLib(t)
	_, err := Open(tinyModel, Options{Feature: "logitz"})
	want := `backbone: feature tensor "logitz" is not produced by any node in "testdata/tiny_cnn.onnx"; candidates: "pooled" (auto), "flat"`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant    %s", err, want)
	}
	_, err = Open(filepath.Join(t.TempDir(), "missing.onnx"), Options{})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing.onnx") {
		t.Errorf("missing file: error = %v", err)
	}
}

func TestCutIntermediateTensor(t *testing.T) {
	m, err := onnxpb.Load(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	cut, ci, err := Cut(m, "relu_out")
	if err != nil {
		t.Fatal(err)
	}
	if ci.Dim != 4*6*6 || ci.Nodes != 2 || ci.Added != 1 || ci.Quantized {
		t.Errorf("cut at relu_out: %+v, want D=144, 2 kept nodes, 1 Flatten", *ci)
	}
	last := cut.Graph.Node[len(cut.Graph.Node)-1]
	if last.OpType != "Flatten" || last.Output[0] != OutputName {
		t.Errorf("last node %v, want Flatten -> %q", last, OutputName)
	}
}
