package head

import (
	"fmt"

	"github.com/chewxy/hm"
	"gonum.org/v1/gonum/blas"
	gg "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/grouploss/pipeline/internal/matmul"
)

// gramOp is the Gram matrix of the rows of x (n, e): G (n, n) = x·xᵀ, one sgemm (dgemm) call
// with sgemm's transpose flag. gorgonia's Mul(x, Transpose(x)) materializes the transpose with
// its generic iterator, forward and backward (about 8% of a head step's CPU). Its gradient is
// gramGradOp: dx = (g + gᵀ)·x. Each Op owns its buffers.
type gramOp struct {
	opID
	n, e int
	dt   tensor.Dtype
	y    *tensor.Dense
}

// gramMatrix returns the node of x·xᵀ.
func gramMatrix(x *gg.Node) (*gg.Node, error) {
	s := x.Shape()
	return gg.ApplyOp(&gramOp{opID: newOpID(), n: s[0], e: s[1], dt: x.Dtype()}, x)
}

func (o *gramOp) Arity() int    { return 1 }
func (o *gramOp) Type() hm.Type { return hm.NewFnType(matType(o.dt), matType(o.dt)) }
func (o *gramOp) InferShape(...gg.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.n, o.n}, nil
}

func (o *gramOp) Do(vs ...gg.Value) (gg.Value, error) {
	if o.y == nil {
		o.y = newDense(dtypeOf(o.dt), o.n, o.n)
	}
	gemmNT(o.y.Data(), vs[0].Data(), vs[0].Data(), o.n, o.n, o.e, 0)
	return o.y, nil
}

func (o *gramOp) String() string { return fmt.Sprintf("gram(%d×%d)", o.n, o.e) }

func (o *gramOp) DiffWRT(int) []bool { return []bool{true} }

func (o *gramOp) SymDiff(inputs gg.Nodes, output, grad *gg.Node) (gg.Nodes, error) {
	d, err := gg.ApplyOp(&gramGradOp{opID: newOpID(), f: o}, inputs[0], grad)
	return gg.Nodes{d}, err
}

// gramGradOp computes dx = (g + gᵀ)·x from x (n, e) and the output gradient g (n, n).
type gramGradOp struct {
	opID
	f   *gramOp
	d   *tensor.Dense
	sym *tensor.Dense // g + gᵀ
}

func (o *gramGradOp) Arity() int { return 2 }
func (o *gramGradOp) Type() hm.Type {
	return hm.NewFnType(matType(o.f.dt), matType(o.f.dt), matType(o.f.dt))
}
func (o *gramGradOp) InferShape(...gg.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.f.n, o.f.e}, nil
}

func (o *gramGradOp) Do(vs ...gg.Value) (gg.Value, error) {
	n, e := o.f.n, o.f.e
	if o.d == nil {
		o.d = newDense(dtypeOf(o.f.dt), n, e)
		o.sym = newDense(dtypeOf(o.f.dt), n, n)
	}
	switch g := vs[1].Data().(type) {
	case []float32:
		symmetrize(o.sym.Data().([]float32), g, n)
	case []float64:
		symmetrize(o.sym.Data().([]float64), g, n)
	}
	gemmNN(o.d.Data(), o.sym.Data(), vs[0].Data(), n, e, n)
	return o.d, nil
}

// symmetrize sets s = g + gᵀ for (n, n) matrices.
func symmetrize[T float](s, g []T, n int) {
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			s[i*n+j] = g[i*n+j] + g[j*n+i]
		}
	}
}

func (o *gramGradOp) String() string { return fmt.Sprintf("d%v", o.f) }

// gemmNT sets c (m, n) = a (m, k) · b (n, k)ᵀ (+ beta·c) for float32 or float64 backing arrays.
func gemmNT(c, a, b any, m, n, k int, beta float64) {
	switch c := c.(type) {
	case []float32:
		matmul.BLAS{}.Sgemm(blas.NoTrans, blas.Trans, m, n, k, 1, a.([]float32), k, b.([]float32), k, float32(beta), c, n)
	case []float64:
		matmul.BLAS{}.Dgemm(blas.NoTrans, blas.Trans, m, n, k, 1, a.([]float64), k, b.([]float64), k, beta, c, n)
	}
}

// gemmNN sets c (m, n) = a (m, k) · b (k, n).
func gemmNN(c, a, b any, m, n, k int) {
	switch c := c.(type) {
	case []float32:
		matmul.BLAS{}.Sgemm(blas.NoTrans, blas.NoTrans, m, n, k, 1, a.([]float32), k, b.([]float32), n, 0, c, n)
	case []float64:
		matmul.BLAS{}.Dgemm(blas.NoTrans, blas.NoTrans, m, n, k, 1, a.([]float64), k, b.([]float64), n, 0, c, n)
	}
}

var (
	_ gg.SDOp = (*gramOp)(nil)
	_ gg.Op   = (*gramGradOp)(nil)
)
