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
// stored (out, in). Its gradients are linearGradOps. W and b are float64 leaves (the Params' own
// type, sharing their memory) whatever the dtype of x and y. Float32 graphs convert W once per
// step (w32, which the input gradient reuses) and run the products on OpenBLAS
// (kernels_f32.go); float64 graphs use the kernels of kernels.go on W as stored. Each Op owns its buffers: gorgonia's tape machine may offer a reused
// buffer of another node's shape.
type linearOp struct {
	opID
	n, in, out int
	dt         tensor.Dtype
	y          *tensor.Dense
	w32        []float32 // float32 graphs: W as of this step's forward
}

// linear returns the node of x·Wᵀ + b.
func linear(x, w, b *gg.Node) (*gg.Node, error) {
	s, ws := x.Shape(), w.Shape()
	op := &linearOp{opID: newOpID(), n: s[0], in: s[1], out: ws[0], dt: x.Dtype()}
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
		if o.w32 == nil {
			o.w32 = make([]float32, len(w))
		}
		linear32(y, vs[0].Data().([]float32), o.w32, w, b, o.n, o.in, o.out)
	case []float64:
		linearKernel(y, w, b, vs[0].Data().([]float64), o.out, o.in, o.n, 1, o.out, dot64)
	}
	return o.y, nil
}

func (o *linearOp) String() string { return fmt.Sprintf("linear(%d→%d)", o.in, o.out) }

func (o *linearOp) DiffWRT(n int) []bool { return []bool{true, true, true} }

func (o *linearOp) SymDiff(inputs gg.Nodes, output, grad *gg.Node) (gg.Nodes, error) {
	r := make(gg.Nodes, 3)
	for i := range r {
		var err error
		if r[i], err = gg.ApplyOp(&linearGradOp{opID: newOpID(), f: o, wrt: i}, inputs[0], inputs[1], grad); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// linearGradOp computes, from x, W and the output gradient g (n, out), one of dx = g·W (wrt 0,
// x's dtype), dW = gᵀ·x (wrt 1, float64) or db = column sums of g (wrt 2, float64).
type linearGradOp struct {
	opID
	f    *linearOp
	wrt  int
	d    *tensor.Dense
	dw32 []float32 // float32 graphs: dW in float32 (wrt 1)
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
		g := vs[2].Data().([]float32)
		switch o.wrt {
		case 0: // the forward pass converted this step's W
			inputGrad32(o.d.Data().([]float32), g, f.w32, f.n, f.in, f.out)
		case 1:
			if len(o.dw32) != f.out*f.in {
				o.dw32 = make([]float32, f.out*f.in)
			}
			weightGrad32(o.d.Data().([]float64), o.dw32, g, x, f.n, f.in, f.out)
		case 2:
			columnSums(o.d.Data().([]float64), g, f.n, f.out)
		}
	case []float64:
		g := vs[2].Data().([]float64)
		switch o.wrt {
		case 0:
			inputGradKernel(o.d.Data().([]float64), g, w, f.out, f.in, f.n)
		case 1:
			weightGradKernel(o.d.Data().([]float64), make([]float64, f.out), g, x, f.out, f.in, f.n, 1, f.out, axpy64)
		case 2:
			columnSums(o.d.Data().([]float64), g, f.n, f.out)
		}
	}
	return o.d, nil
}

// columnSums sets d (cols) to the column sums of g (rows, cols), the bias gradient.
func columnSums[T float](d []float64, g []T, rows, cols int) {
	clear(d)
	for i := 0; i < rows; i++ {
		for j, v := range g[i*cols : (i+1)*cols] {
			d[j] += float64(v)
		}
	}
}

func (o *linearGradOp) String() string { return fmt.Sprintf("d%v/d%d", o.f, o.wrt) }

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

// opID is what every custom Op of this package answers alike: a unique id, so that gorgonia
// never takes two Ops for the same node (each owns its buffers); a fresh output value; no
// external call; no input overwritten.
type opID uint64

var opIDs atomic.Uint64

func newOpID() opID { return opID(opIDs.Add(1)) }

func (id opID) ReturnsPtr() bool      { return false }
func (id opID) CallsExtern() bool     { return false }
func (id opID) OverwritesInput() int  { return -1 }
func (id opID) WriteHash(h hash.Hash) { fmt.Fprintf(h, "head.op#%d", uint64(id)) }
func (id opID) Hashcode() uint32 {
	h := fnv.New32a()
	id.WriteHash(h)
	return h.Sum32()
}
