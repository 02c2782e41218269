package weights

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"

	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/testenv"
)

// sharedDir returns ../shared (or $PIPELINE_SHARED_DIR), skipping the test when it is absent.
func sharedDir(t *testing.T) string {
	t.Helper()
	testenv.Int8Model(t)
	return testenv.SharedDir(t)
}

func loadShared(t *testing.T) *onnx.ModelProto {
	t.Helper()
	m, err := onnxpb.Load(filepath.Join(sharedDir(t), "models", "mobilenetv2-12-int8.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var ortOnce struct {
	sync.Once
	err error
}

// ortInit initializes onnxruntime once, skipping the test when the library is not configured.
func ortInit(t *testing.T) {
	t.Helper()
	lib := os.Getenv("ONNXRUNTIME_SHARED_LIBRARY_PATH")
	if lib == "" {
		t.Skip("ONNXRUNTIME_SHARED_LIBRARY_PATH is unset: run `make test`")
	}
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("onnxruntime library %q missing (%v): run `make test`", lib, err)
	}
	ortOnce.Do(func() {
		ort.SetSharedLibraryPath(lib)
		ortOnce.err = ort.InitializeEnvironment()
	})
	if ortOnce.err != nil {
		t.Fatalf("initialize onnxruntime: %v", ortOnce.err)
	}
}

// ortRun runs m on one float32 input and returns the outputs, each converted to float32 (uint8
// and int8 outputs are returned as their integer values).
func ortRun(t *testing.T, m *onnx.ModelProto, inName string, in []float32, shape []int64, outNames []string) [][]float32 {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer opts.Destroy()
	if err := opts.SetIntraOpNumThreads(1); err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(data, []string{inName}, outNames, opts)
	if err != nil {
		t.Fatalf("onnxruntime session: %v", err)
	}
	defer s.Destroy()
	x, err := ort.NewTensor(ort.NewShape(shape...), in)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Destroy()
	outs := make([]ort.Value, len(outNames))
	if err := s.Run([]ort.Value{x}, outs); err != nil {
		t.Fatalf("onnxruntime run: %v", err)
	}
	res := make([][]float32, len(outs))
	for i, o := range outs {
		switch v := o.(type) {
		case *ort.Tensor[float32]:
			res[i] = append([]float32(nil), v.GetData()...)
		case *ort.Tensor[uint8]:
			for _, q := range v.GetData() {
				res[i] = append(res[i], float32(q))
			}
		case *ort.Tensor[int8]:
			for _, q := range v.GetData() {
				res[i] = append(res[i], float32(q))
			}
		default:
			t.Fatalf("output %q has unexpected type %T", outNames[i], o)
		}
		o.Destroy()
	}
	return res
}

// intTensor builds an integer initializer (INT8, UINT8 or INT32) stored as raw data.
func intTensor(name string, dt onnx.TensorProto_DataType, dims []int64, vals []int32) *onnx.TensorProto {
	var raw []byte
	for _, v := range vals {
		switch dt {
		case onnx.TensorProto_INT8, onnx.TensorProto_UINT8:
			raw = append(raw, byte(v))
		case onnx.TensorProto_INT32:
			raw = binary.LittleEndian.AppendUint32(raw, uint32(v))
		default:
			panic("intTensor: bad type")
		}
	}
	return &onnx.TensorProto{Name: name, DataType: int32(dt), Dims: dims, RawData: raw}
}

func scalarF(name string, v float32) *onnx.TensorProto {
	return onnxpb.FloatTensor(name, nil, []float32{v})
}

func scalarQ(name string, dt onnx.TensorProto_DataType, v int32) *onnx.TensorProto {
	return intTensor(name, dt, nil, []int32{v})
}

// model wraps a graph into an opset-12 model importing com.microsoft.
func model(nodes []*onnx.NodeProto, inits []*onnx.TensorProto, ins, outs []*onnx.ValueInfoProto) *onnx.ModelProto {
	return &onnx.ModelProto{
		IrVersion:   7,
		OpsetImport: []*onnx.OperatorSetIdProto{{Domain: "", Version: 12}, {Domain: "com.microsoft", Version: 1}},
		Graph:       &onnx.GraphProto{Name: "test", Node: nodes, Initializer: inits, Input: ins, Output: outs},
	}
}

// addOutput appends name (element type elem, unknown shape) to the graph outputs of m.
func addOutput(m *onnx.ModelProto, name string, elem onnx.TensorProto_DataType) {
	m.Graph.Output = append(m.Graph.Output, &onnx.ValueInfoProto{
		Name: name,
		Type: &onnx.TypeProto{Value: &onnx.TypeProto_TensorType{TensorType: &onnx.TypeProto_Tensor{ElemType: int32(elem)}}},
	})
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
