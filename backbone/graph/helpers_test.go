package graph

import (
	"math/rand/v2"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/grouploss/pipeline/internal/onnxpb"
)

// testModel builds a model with the given float inputs ([name, dims...] with dims[0] the
// batch), initializers and nodes; the output is "y".
func testModel(opset int64, inputs map[string][]int, inits []*onnx.TensorProto, nodes ...*onnx.NodeProto) *onnx.ModelProto {
	g := &onnx.GraphProto{Name: "test", Node: nodes, Initializer: inits}
	for _, name := range sortedKeys(inputs) {
		dims := make([]any, len(inputs[name]))
		for i, d := range inputs[name] {
			dims[i] = d
		}
		g.Input = append(g.Input, onnxpb.ValueInfo(name, onnxpb.Float, dims...))
	}
	g.Output = []*onnx.ValueInfoProto{{Name: "y"}}
	return &onnx.ModelProto{IrVersion: 7, Graph: g, OpsetImport: []*onnx.OperatorSetIdProto{{Domain: "", Version: opset}}}
}

func sortedKeys(m map[string][]int) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	for i := range k {
		for j := i + 1; j < len(k); j++ {
			if k[j] < k[i] {
				k[i], k[j] = k[j], k[i]
			}
		}
	}
	return k
}

// randTensor returns a float initializer with N(0, scale²) values.
func randTensor(r *rand.Rand, name string, scale float64, dims ...int64) *onnx.TensorProto {
	n := 1
	for _, d := range dims {
		n *= int(d)
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * scale)
	}
	return onnxpb.FloatTensor(name, dims, v)
}

func randFloats(r *rand.Rand, n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = r.NormFloat64() * scale
	}
	return v
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }
