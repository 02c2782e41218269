package head

import (
	"fmt"
	"hash"
	"hash/fnv"
	"sync/atomic"

	"github.com/chewxy/hm"
	gg "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// linearOp is the head's input layer as a gorgonia Op: y (n, out) = x (n, in) · Wᵀ + b with W
// stored (out, in), computed by the kernels of kernels.go (about 2.3× less CPU than gonum's
// blocked Sgemm, which gorgonia's Mul uses, for these shapes). Its gradients are linearGradOps.
// W and b are float64 leaves (the Params' own type) whatever the dtype of x and y: the kernels
// convert W's rows as they use them, and dW comes out in float64, which saves converting the
// largest parameter to and from float32 at every step. Each Op owns its output buffer:
// gorgonia's tape machine may offer a reused buffer of another node's shape.
type linearOp struct {
	id          uint64
	n, in, out  int
	dt          tensor.Dtype
	y           *tensor.Dense
	scratchBias []float64
}

var linearIDs atomic.Uint64

// linear returns the node of x·Wᵀ + b.
func linear(x, w, b *gg.Node) (*gg.Node, error) {
	s, ws := x.Shape(), w.Shape()
	op := &linearOp{id: linearIDs.Add(1), n: s[0], in: s[1], out: ws[0], dt: x.Dtype()}
	return gg.ApplyOp(op, x, w, b)
}

func matType(dt tensor.Dtype) hm.Type { return gg.TensorType{Dims: 2, Of: dt} }
func vecType(dt tensor.Dtype) hm.Type { return gg.TensorType{Dims: 1, Of: dt} }

func (o *linearOp) Arity() int { return 3 }
func (o *linearOp) Type() hm.Type {
	return hm.NewFnType(matType(o.dt), matType(tensor.Float64), vecType(tensor.Float64), matType(o.dt))
}
func (o *linearOp) InferShape(...gg.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.n, o.out}, nil
}

func (o *linearOp) Do(vs ...gg.Value) (gg.Value, error) {
	if o.y == nil {
		o.y = newDense(dtypeOf(o.dt), o.n, o.out)
	}
	w, b := vs[1].Data().([]float64), vs[2].Data().([]float64)
	switch y := o.y.Data().(type) {
	case []float32:
		linearKernel(y, w, b, vs[0].Data().([]float32), o.out, o.in, o.n, 1, o.out, dot32)
	case []float64:
		linearKernel(y, w, b, vs[0].Data().([]float64), o.out, o.in, o.n, 1, o.out, dot64)
	}
	return o.y, nil
}

func (o *linearOp) ReturnsPtr() bool      { return false }
func (o *linearOp) CallsExtern() bool     { return false }
func (o *linearOp) OverwritesInput() int  { return -1 }
func (o *linearOp) WriteHash(h hash.Hash) { fmt.Fprintf(h, "head.linear#%d", o.id) }
func (o *linearOp) Hashcode() uint32      { return hashOf(o) }
func (o *linearOp) String() string        { return fmt.Sprintf("linear(%d→%d)", o.in, o.out) }

func (o *linearOp) DiffWRT(n int) []bool { return []bool{true, true, true} }

func (o *linearOp) SymDiff(inputs gg.Nodes, output, grad *gg.Node) (gg.Nodes, error) {
	r := make(gg.Nodes, 3)
	for i := range r {
		var err error
		if r[i], err = gg.ApplyOp(&linearGradOp{id: linearIDs.Add(1), f: o, wrt: i}, inputs[0], inputs[1], grad); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// linearGradOp computes, from x, W and the output gradient g (n, out), one of dx = g·W (wrt 0,
// x's dtype), dW = gᵀ·x (wrt 1, float64) or db = column sums of g (wrt 2, float64).
type linearGradOp struct {
	id  uint64
	f   *linearOp
	wrt int
	d   *tensor.Dense
}

func (o *linearGradOp) Arity() int { return 3 }
func (o *linearGradOp) Type() hm.Type {
	dt := o.f.dt
	r := [...]hm.Type{matType(dt), matType(tensor.Float64), vecType(tensor.Float64)}[o.wrt]
	return hm.NewFnType(matType(dt), matType(tensor.Float64), matType(dt), r)
}
func (o *linearGradOp) InferShape(...gg.DimSizer) (tensor.Shape, error) {
	f := o.f
	return [...]tensor.Shape{{f.n, f.in}, {f.out, f.in}, {f.out}}[o.wrt], nil
}

func (o *linearGradOp) Do(vs ...gg.Value) (gg.Value, error) {
	f := o.f
	if o.d == nil {
		s, _ := o.InferShape()
		dt := Float64
		if o.wrt == 0 {
			dt = dtypeOf(f.dt)
		}
		o.d = newDense(dt, s...)
	}
	w := vs[1].Data().([]float64)
	switch x := vs[0].Data().(type) {
	case []float32:
		linearGrad(o, x, w, vs[2].Data().([]float32), axpy32)
	case []float64:
		linearGrad(o, x, w, vs[2].Data().([]float64), axpy64)
	}
	return o.d, nil
}

func linearGrad[T float](o *linearGradOp, x []T, w []float64, g []T, axpy func(int, T, []T, []T)) {
	f := o.f
	switch o.wrt {
	case 0:
		inputGradKernel(o.d.Data().([]T), g, w, f.out, f.in, f.n)
	case 1:
		weightGradKernel(o.d.Data().([]float64), make([]float64, f.out), g, x, f.out, f.in, f.n, 1, f.out, axpy)
	case 2:
		d := o.d.Data().([]float64)
		clear(d)
		for i := 0; i < f.n; i++ {
			for j, v := range g[i*f.out : (i+1)*f.out] {
				d[j] += float64(v)
			}
		}
	}
}

func (o *linearGradOp) ReturnsPtr() bool      { return false }
func (o *linearGradOp) CallsExtern() bool     { return false }
func (o *linearGradOp) OverwritesInput() int  { return -1 }
func (o *linearGradOp) WriteHash(h hash.Hash) { fmt.Fprintf(h, "head.dlinear/%d#%d", o.wrt, o.id) }
func (o *linearGradOp) Hashcode() uint32      { return hashOf(o) }
func (o *linearGradOp) String() string        { return fmt.Sprintf("d%v/d%d", o.f, o.wrt) }

func hashOf(o interface{ WriteHash(hash.Hash) }) uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}

func dtypeOf(dt tensor.Dtype) DType {
	if dt == tensor.Float64 {
		return Float64
	}
	return Float32
}

var (
	_ gg.SDOp = (*linearOp)(nil)
	_ gg.Op   = (*linearGradOp)(nil)
)
