package graph

import (
	"fmt"
	"math/rand/v2"

	gg "gorgonia.org/gorgonia"
	gt "gorgonia.org/tensor"

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

// stepper runs a decoded graph forward and backward through gorgonia in element type T for one
// batch size: the loss is Σ gy ⊙ y for a given gy, so the gradients it reports are those of the
// output with gradient gy.
type stepper[T float] struct {
	vm     gg.VM
	xs     []*gt.Dense
	gy     *gt.Dense
	params []ParamNode
	y      gg.Value
	gx     []gg.Value
	gp     []gg.Value
}

func newStepper[T float](g *Graph, batch int) (*stepper[T], error) {
	dt := dtypeOf[T]()
	eg := gg.NewGraph()
	s := &stepper[T]{}
	var xs gg.Nodes
	for i, shape := range g.p.inShapes {
		sh := append([]int{batch}, shape...)
		v := gt.New(gt.WithShape(sh...), gt.Of(dt))
		xs = append(xs, gg.NewTensor(eg, dt, len(sh), gg.WithShape(sh...), gg.WithName(fmt.Sprint("x", i)), gg.WithValue(v)))
		s.xs = append(s.xs, v)
	}
	out, params, err := g.AddTo(eg, xs...)
	if err != nil {
		return nil, err
	}
	s.params = params
	if out.Shape().TotalSize() == 0 { // gorgonia's arithmetic and Read panic on empty tensors
		s.vm = gg.NewTapeMachine(eg.SubgraphRoots(out))
		s.y = gt.New(gt.WithShape(out.Shape()...), gt.Of(dt))
		return s, nil
	}
	s.gy = gt.New(gt.WithShape(out.Shape()...), gt.Of(dt))
	gy := gg.NewTensor(eg, dt, out.Dims(), gg.WithShape(out.Shape()...), gg.WithName("gy"), gg.WithValue(s.gy))
	loss, err := gg.Sum(gg.Must(gg.HadamardProd(out, gy)))
	if err != nil {
		return nil, err
	}
	wrt := append(gg.Nodes(nil), xs...)
	for _, p := range params {
		wrt = append(wrt, p.Node)
	}
	grads, err := gg.Grad(loss, wrt...)
	if err != nil {
		return nil, err
	}
	s.gx = make([]gg.Value, len(xs))
	s.gp = make([]gg.Value, len(params))
	roots := gg.Nodes{gg.Read(out, &s.y)}
	for i := range xs {
		roots = append(roots, gg.Read(grads[i], &s.gx[i]))
	}
	for i := range params {
		roots = append(roots, gg.Read(grads[len(xs)+i], &s.gp[i]))
	}
	s.vm = gg.NewTapeMachine(eg.SubgraphRoots(roots...))
	return s, nil
}

// step runs the graph on xs with output gradient gy (nil: zeros) and returns the output and
// the inputs' gradients; it overwrites every Param's Grad.
func (s *stepper[T]) step(xs [][]T, gy []T) ([]T, [][]T, error) {
	for i, x := range xs {
		d, _ := dataOf[T](s.xs[i])
		copy(d, x)
	}
	if s.gy != nil {
		d, _ := dataOf[T](s.gy)
		clear(d)
		copy(d, gy)
	}
	LoadParams(s.params)
	s.vm.Reset()
	if err := s.vm.RunAll(); err != nil {
		return nil, nil, runError(err)
	}
	gx := make([][]T, len(s.gx))
	for i, v := range s.gx {
		if v == nil {
			continue
		}
		d, _ := dataOf[T](v)
		gx[i] = append([]T(nil), d...)
	}
	for i, p := range s.params {
		if s.gp == nil {
			break
		}
		d, _ := dataOf[T](s.gp[i])
		for j, v := range d {
			p.Param.Grad[j] = float64(v)
		}
	}
	y, _ := dataOf[T](s.y)
	return append([]T(nil), y...), gx, nil
}
