package ort

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/testenv"
)

// ortLib initializes onnxruntime from ONNXRUNTIME_SHARED_LIBRARY_PATH or skips the test.
func ortLib(t *testing.T) {
	t.Helper()
	p := testenv.ORTLibrary(t)
	if err := Init(p); err != nil {
		t.Fatal(err)
	}
	if err := Init(p); err != nil {
		t.Fatalf("second Init with the same path: %v", err)
	}
}

func TestLibraryPath(t *testing.T) {
	root := t.TempDir()
	lib := filepath.Join(root, DefaultRelPath)
	if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	deep := filepath.Join(root, "a", "b", "c")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	cases := []struct {
		name, flag, env string
		starts          []string
		want            string
	}{
		{"flag wins", "/opt/ort.so", "/env/ort.so", []string{deep}, "/opt/ort.so"},
		{"env next", "", "/env/ort.so", []string{deep}, "/env/ort.so"},
		{"upward from cwd", "", "", []string{deep}, lib},
		{"from the executable dir", "", "", []string{elsewhere, filepath.Join(root, "a")}, lib},
		{"nothing", "", "", []string{elsewhere}, ""},
	}
	for _, tc := range cases {
		if got := libraryPath(tc.flag, tc.env, tc.starts); got != tc.want {
			t.Errorf("%s: libraryPath = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestInitMissingLibrary(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	err := Init(missing)
	var le *LibraryError
	if !errors.As(err, &le) {
		t.Fatalf("Init(missing) = %v, want *LibraryError", err)
	}
	want := `ort: onnxruntime library not found at "` + missing + "\": run `make ort` or set ONNXRUNTIME_SHARED_LIBRARY_PATH / --onnxruntime"
	if err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
	if err := Init(""); err == nil || !strings.Contains(err.Error(), "not found") || !strings.Contains(err.Error(), "make ort") {
		t.Errorf("Init(\"\") = %v", err)
	}
}

// TestInitWrongLibrary loads a file that is not onnxruntime in a child process (the
// environment can be initialized only once per process).
func TestInitWrongLibrary(t *testing.T) {
	if p := os.Getenv("ORT_TEST_WRONG_LIBRARY"); p != "" {
		err := Init(p)
		if err == nil {
			os.Stdout.WriteString("Init succeeded\n")
			os.Exit(3)
		}
		os.Stdout.WriteString(err.Error() + "\n")
		os.Exit(0)
	}
	fake := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(fake, []byte("not an ELF file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestInitWrongLibrary$")
	cmd.Env = append(os.Environ(), "ORT_TEST_WRONG_LIBRARY="+fake)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	msg := strings.TrimSpace(string(out))
	if !strings.HasPrefix(msg, `ort: cannot load onnxruntime library "`+fake+`"`) || !strings.Contains(msg, "run `make ort`") {
		t.Errorf("wrong library error = %q", msg)
	}
}

// scaleModel is y = Flatten(x) * [1..6] for x [batch,2,3] (or a pinned batch when batch is an int).
func scaleModel(t *testing.T, batch any) []byte {
	t.Helper()
	g := &onnx.GraphProto{
		Name: "scale",
		Node: []*onnx.NodeProto{
			onnxpb.Node("Flatten", "flat", []string{"x"}, []string{"f"}, onnxpb.AttrInt("axis", 1)),
			onnxpb.Node("Mul", "mul", []string{"f", "k"}, []string{"y"}),
		},
		Initializer: []*onnx.TensorProto{onnxpb.FloatTensor("k", []int64{6}, []float32{1, 2, 3, 4, 5, 6})},
		Input:       []*onnx.ValueInfoProto{onnxpb.ValueInfo("x", onnxpb.Float, batch, 2, 3)},
		Output:      []*onnx.ValueInfoProto{onnxpb.ValueInfo("y", onnxpb.Float, batch, 6)},
	}
	data, err := onnxpb.Marshal(&onnx.ModelProto{IrVersion: 7, OpsetImport: []*onnx.OperatorSetIdProto{{Version: 12}}, Graph: g})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestSessionRun(t *testing.T) {
	ortLib(t)
	if v := Version(); !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(v) {
		t.Errorf("Version() = %q", v)
	}
	s, err := NewSession(scaleModel(t, "batch"), Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.InputShape(); len(got) != 2 || got[0] != 2 || got[1] != 3 {
		t.Errorf("InputShape = %v", got)
	}
	if got := s.OutputShape(); len(got) != 1 || got[0] != 6 {
		t.Errorf("OutputShape = %v", got)
	}
	// Six batch sizes, then the first again: exercises the tensor cache and its eviction.
	for _, n := range []int{1, 2, 3, 4, 5, 6, 1, 3} {
		in := make([]float32, n*6+5) // longer than needed: only the prefix is used
		for i := range in {
			in[i] = float32(i%7) - 3
		}
		out := make([]float32, n*6)
		if err := s.Run(in, n, out); err != nil {
			t.Fatalf("batch %d: %v", n, err)
		}
		for i, v := range out {
			if want := in[i] * float32(i%6+1); v != want {
				t.Fatalf("batch %d: out[%d] = %g, want %g", n, i, v, want)
			}
		}
	}
	if len(s.cache) > maxCached {
		t.Errorf("cache holds %d batch sizes, want <= %d", len(s.cache), maxCached)
	}
	for _, tc := range []struct {
		in, out []float32
		n       int
		want    string
	}{
		{make([]float32, 6), make([]float32, 6), 0, "batch size 0"},
		{make([]float32, 11), make([]float32, 12), 2, "input has 11 values, want 12"},
		{make([]float32, 12), make([]float32, 6), 2, "output has room for 6 values, want 12"},
	} {
		if err := s.Run(tc.in, tc.n, tc.out); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(n=%d) error = %v, want %q", tc.n, err, tc.want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Run(make([]float32, 6), 1, make([]float32, 6)); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Run after Close: %v", err)
	}
}

func TestSessionPinnedBatch(t *testing.T) {
	ortLib(t)
	s, err := NewSession(scaleModel(t, 1), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Run(make([]float32, 6), 1, make([]float32, 6)); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(make([]float32, 12), 2, make([]float32, 12)); err == nil || !strings.Contains(err.Error(), "pins batch 1") {
		t.Errorf("batch 2 on a batch-1 model: %v", err)
	}
}

func TestNewSessionRejects(t *testing.T) {
	ortLib(t)
	if _, err := NewSession([]byte("junk"), Options{}); err == nil {
		t.Error("NewSession accepted junk")
	}
	m := &onnx.ModelProto{IrVersion: 7, OpsetImport: []*onnx.OperatorSetIdProto{{Version: 12}}, Graph: &onnx.GraphProto{
		Node:   []*onnx.NodeProto{onnxpb.Node("Add", "add", []string{"a", "b"}, []string{"c"})},
		Input:  []*onnx.ValueInfoProto{onnxpb.ValueInfo("a", onnxpb.Float, "n", 2), onnxpb.ValueInfo("b", onnxpb.Float, "n", 2)},
		Output: []*onnx.ValueInfoProto{onnxpb.ValueInfo("c", onnxpb.Float, "n", 2)},
	}}
	data, _ := onnxpb.Marshal(m)
	if _, err := NewSession(data, Options{}); err == nil || !strings.Contains(err.Error(), "2 inputs") {
		t.Errorf("two-input model: %v", err)
	}
	m.Graph.Input = m.Graph.Input[:1]
	m.Graph.Node[0].Input[1] = "a" // "b" is no longer an input: a dangling input is refused earlier
	m.Graph.Input[0] = onnxpb.ValueInfo("a", onnxpb.Float, "n", "m")
	data, _ = onnxpb.Marshal(m)
	if _, err := NewSession(data, Options{}); err == nil || !strings.Contains(err.Error(), "dynamic axis 1") {
		t.Errorf("dynamic non-batch axis: %v", err)
	}
}

// TestNewSessionThreadsBound: threads over MaxThreads are refused before onnxruntime starts them
// (threads 100000 exhausted the process).
func TestNewSessionThreadsBound(t *testing.T) {
	ortLib(t)
	for _, n := range []int{-1, MaxThreads + 1, 100000} {
		if s, err := NewSession(scaleModel(t, 1), Options{Threads: n}); err == nil || !strings.Contains(err.Error(), "threads") {
			if s != nil {
				s.Close()
			}
			t.Errorf("Threads %d: %v, want an error", n, err)
		}
	}
}

// TestInitTurnsTelemetryOff: Init sets ORT_DISABLE_TELEMETRY before onnxruntime creates its
// environment (TestCommandsTouchOnlyTheirFolders traces the files it no longer writes).
func TestInitTurnsTelemetryOff(t *testing.T) {
	ortLib(t)
	if os.Getenv(telemetryEnv) != "1" {
		t.Fatalf("%s=%q after Init", telemetryEnv, os.Getenv(telemetryEnv))
	}
}
