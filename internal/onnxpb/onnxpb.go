// Package onnxpb holds small helpers over gonnx's ONNX protobuf types: loading and saving models,
// reading tensor data as float32, and building nodes, attributes, tensors and value infos.
package onnxpb

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/grouploss/pipeline/internal/atomicfile"
)

// MaxModelBytes is the largest model Load and ReadFile accept, external data included: protobuf
// messages cannot exceed 2 GiB, and external data is stored inline once read.
var MaxModelBytes int64 = 2<<30 - 1

var (
	// ErrInvalid is wrapped by errors for files that are not usable ONNX models (empty, not
	// protobuf, no graph).
	ErrInvalid = errors.New("invalid ONNX model")
	// ErrTooLarge is wrapped by errors for files larger than MaxModelBytes.
	ErrTooLarge = errors.New("model file too large")
)

// ReadFile reads a model file, refusing files larger than MaxModelBytes and empty files.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("onnxpb: model file does not exist: %w", err)
		}
		return nil, fmt.Errorf("onnxpb: open model: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("onnxpb: stat model %q: %w", path, err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("onnxpb: %w: %q is a directory", ErrInvalid, path)
	}
	if st.Size() > MaxModelBytes {
		return nil, fmt.Errorf("onnxpb: model %q is %d bytes, more than the limit of %d: %w",
			path, st.Size(), MaxModelBytes, ErrTooLarge)
	}
	// Read at most MaxModelBytes+1 in case the file grows while being read.
	data, err := io.ReadAll(io.LimitReader(f, MaxModelBytes+1))
	if err != nil {
		return nil, fmt.Errorf("onnxpb: read model %q: %w", path, err)
	}
	if int64(len(data)) > MaxModelBytes {
		return nil, fmt.Errorf("onnxpb: model %q is larger than the limit of %d bytes: %w",
			path, MaxModelBytes, ErrTooLarge)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("onnxpb: %w: %q is empty", ErrInvalid, path)
	}
	return data, nil
}

// Load reads and parses the ONNX model at path, with its external data (see UnmarshalDir).
// Errors name the file and say whether it is missing, empty, too large, not protobuf, has no
// graph, or is not a well-formed graph.
func Load(path string) (*onnx.ModelProto, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return UnmarshalDir(data, path, filepath.Dir(path))
}

// Unmarshal parses a serialized ONNX model; name (usually the file path) is used in errors.
// Tensors with external data are refused (ErrExternalData): use UnmarshalDir or Load for models
// that keep weights beside them. See UnmarshalDir for the checks.
func Unmarshal(data []byte, name string) (*onnx.ModelProto, error) {
	return UnmarshalDir(data, name, "")
}

// UnmarshalDir parses a serialized ONNX model whose external data, if any, lives in the folder
// dir (see ResolveExternalData; with dir "" external data is refused); name (usually the file
// path) is used in errors. It checks that the model has a graph with at least one node and one
// output and an opset import; that no tensor declares more than MaxTensorElements elements
// (ErrTooLarge); and that the dataflow is well-formed: every node input is a graph input, an
// initializer, an outer-scope name or a node output, no tensor is defined twice, graph outputs
// are produced, and there is no cycle (ErrInvalid). The error names the node and tensor.
func UnmarshalDir(data []byte, name, dir string) (*onnx.ModelProto, error) {
	m, err := parse(data, name)
	if err != nil {
		return nil, err
	}
	if dir != "" {
		if err := ResolveExternalData(m, dir, int64(len(data))); err != nil {
			return nil, fmt.Errorf("%w (model %q)", err, name)
		}
	}
	if err := checkModel(m, name); err != nil {
		return nil, err
	}
	return m, nil
}

func parse(data []byte, name string) (*onnx.ModelProto, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("onnxpb: %w: %q is empty", ErrInvalid, name)
	}
	m := &onnx.ModelProto{}
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("onnxpb: %w: %q cannot be parsed as ONNX protobuf (truncated or corrupt?): %v", ErrInvalid, name, err)
	}
	g := m.GetGraph()
	switch {
	case g == nil:
		return nil, fmt.Errorf("onnxpb: %w: %q has no graph", ErrInvalid, name)
	case len(g.GetNode()) == 0:
		return nil, fmt.Errorf("onnxpb: %w: %q has a graph without nodes", ErrInvalid, name)
	case len(g.GetOutput()) == 0:
		return nil, fmt.Errorf("onnxpb: %w: %q has a graph without outputs", ErrInvalid, name)
	case len(m.GetOpsetImport()) == 0:
		return nil, fmt.Errorf("onnxpb: %w: %q has no opset imports", ErrInvalid, name)
	}
	return m, nil
}

// Marshal serializes a model deterministically.
func Marshal(m *onnx.ModelProto) ([]byte, error) {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("onnxpb: marshal model: %w", err)
	}
	return data, nil
}

// Clone returns a deep copy of m.
func Clone(m *onnx.ModelProto) *onnx.ModelProto {
	return proto.Clone(m).(*onnx.ModelProto)
}

// SaveAtomic serializes m and writes it to path atomically: a temporary file in the same
// directory is written, synced and renamed over path.
func SaveAtomic(path string, m *onnx.ModelProto) error {
	data, err := Marshal(m)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(path, "ONNX model", data); err != nil {
		return fmt.Errorf("onnxpb: %w", err)
	}
	return nil
}
