package head

import (
	"fmt"
	"math"

	"github.com/chewxy/hm"
	gg "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// pearsonOp is the Group Loss's similarity before its ReLU, as one gorgonia Op: for embeddings
// z (n, e), x = z − rowmean(z), n_i = sqrt(‖x_i‖² + ε) and C = (x xᵀ + εI) / outer(n, n) (the
// formulas of the package doc). Built from gorgonia's ops it took about ten nodes, each
// broadcast materialized by gorgonia's generic repeat, forward and backward. Its gradient is
// pearsonGradOp, from z, C and the gradient of C. Each Op owns its buffers.
type pearsonOp struct {
	opID
	n, e int
	dt   tensor.Dtype
	y    *tensor.Dense
	x    any // the centered rows, []float32 or []float64 as z
	nrm  any // n_i
}

// pearson returns the node of the correlation matrix C of z's rows.
func pearson(z *gg.Node) (*gg.Node, error) {
	s := z.Shape()
	return gg.ApplyOp(&pearsonOp{opID: newOpID(), n: s[0], e: s[1], dt: z.Dtype()}, z)
}

func (o *pearsonOp) Arity() int    { return 1 }
func (o *pearsonOp) Type() hm.Type { return hm.NewFnType(matType(o.dt), matType(o.dt)) }
func (o *pearsonOp) InferShape(...gg.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.n, o.n}, nil
}

func (o *pearsonOp) Do(vs ...gg.Value) (gg.Value, error) {
	if o.y == nil {
		o.y = newDense(dtypeOf(o.dt), o.n, o.n)
	}
	switch z := vs[0].Data().(type) {
	case []float32:
		x, nrm := scratch[float32](&o.x, o.n*o.e), scratch[float32](&o.nrm, o.n)
		pearsonForward(o.y.Data().([]float32), x, nrm, z, o.n, o.e)
	case []float64:
		x, nrm := scratch[float64](&o.x, o.n*o.e), scratch[float64](&o.nrm, o.n)
		pearsonForward(o.y.Data().([]float64), x, nrm, z, o.n, o.e)
	}
	return o.y, nil
}

// scratch returns *buf as a []T of n values, allocated on first use.
func scratch[T float](buf *any, n int) []T {
	if s, ok := (*buf).([]T); ok && len(s) == n {
		return s
	}
	s := make([]T, n)
	*buf = s
	return s
}

func (o *pearsonOp) String() string { return fmt.Sprintf("pearson(%d×%d)", o.n, o.e) }

func (o *pearsonOp) DiffWRT(int) []bool { return []bool{true} }

func (o *pearsonOp) SymDiff(inputs gg.Nodes, output, grad *gg.Node) (gg.Nodes, error) {
	d, err := gg.ApplyOp(&pearsonGradOp{opID: newOpID(), f: o}, inputs[0], output, grad)
	return gg.Nodes{d}, err
}

// pearsonGradOp computes dz from z (n, e), C (n, n) and the gradient g of C (n, n).
type pearsonGradOp struct {
	opID
	f         *pearsonOp
	d         *tensor.Dense
	x, nrm, s any // the centered rows, n_i, and the gradient of x xᵀ made symmetric
}

func (o *pearsonGradOp) Arity() int { return 3 }
func (o *pearsonGradOp) Type() hm.Type {
	m := matType(o.f.dt)
	return hm.NewFnType(m, m, m, m)
}
func (o *pearsonGradOp) InferShape(...gg.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.f.n, o.f.e}, nil
}

func (o *pearsonGradOp) Do(vs ...gg.Value) (gg.Value, error) {
	n, e := o.f.n, o.f.e
	if o.d == nil {
		o.d = newDense(dtypeOf(o.f.dt), n, e)
	}
	switch z := vs[0].Data().(type) {
	case []float32:
		pearsonBackward(o.d.Data().([]float32), scratch[float32](&o.x, n*e), scratch[float32](&o.nrm, n),
			scratch[float32](&o.s, n*n), z, vs[1].Data().([]float32), vs[2].Data().([]float32), n, e)
	case []float64:
		pearsonBackward(o.d.Data().([]float64), scratch[float64](&o.x, n*e), scratch[float64](&o.nrm, n),
			scratch[float64](&o.s, n*n), z, vs[1].Data().([]float64), vs[2].Data().([]float64), n, e)
	}
	return o.d, nil
}

func (o *pearsonGradOp) String() string { return fmt.Sprintf("d%v", o.f) }

// center sets x = z − rowmean(z) and nrm_i = sqrt(‖x_i‖² + ε) for z (n, e).
func center[T float](x, nrm, z []T, n, e int) {
	inv := T(1 / float64(e))
	for i := 0; i < n; i++ {
		zr, xr := z[i*e:(i+1)*e], x[i*e:(i+1)*e]
		var s T
		for _, v := range zr {
			s += v
		}
		mean := s * inv
		var q T
		for k, v := range zr {
			d := v - mean
			xr[k] = d
			q += d * d
		}
		nrm[i] = T(math.Sqrt(float64(q + T(normEps))))
	}
}

// pearsonForward sets c = (x xᵀ + εI) / outer(nrm, nrm), dividing by nrm_i and then by nrm_j as
// the broadcast divisions it replaces did, with x and nrm from center.
func pearsonForward[T float](c, x, nrm, z []T, n, e int) {
	center(x, nrm, z, n, e)
	gemmNT(c, x, x, n, n, e, 0)
	for i := 0; i < n; i++ {
		c[i*n+i] += T(normEps)
		row := c[i*n : (i+1)*n]
		for j := range row {
			row[j] = row[j] / nrm[i] / nrm[j]
		}
	}
}

// pearsonBackward sets dz, the gradient of z, from the gradient g of C = pearson(z):
// with G = x xᵀ + εI and C_ij = G_ij / (n_i n_j),
//
//	dG_ij = g_ij / (n_i n_j), dn_i = −(Σ_j g_ij C_ij + g_ji C_ji) / n_i,
//	dx_i = Σ_j (dG_ij + dG_ji) x_j + dn_i x_i / n_i, dz_i = dx_i − rowmean(dx_i).
func pearsonBackward[T float](dz, x, nrm, s, z, c, g []T, n, e int) {
	center(x, nrm, z, n, e)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			s[i*n+j] = g[i*n+j]/nrm[i]/nrm[j] + g[j*n+i]/nrm[j]/nrm[i]
		}
	}
	gemmNN(dz, s, x, n, e, n)
	inv := T(1 / float64(e))
	for i := 0; i < n; i++ {
		var a T
		for j := 0; j < n; j++ {
			a += g[i*n+j]*c[i*n+j] + g[j*n+i]*c[j*n+i]
		}
		coef := -a / (nrm[i] * nrm[i])
		dr, xr := dz[i*e:(i+1)*e], x[i*e:(i+1)*e]
		var sum T
		for k, v := range xr {
			dr[k] += coef * v
			sum += dr[k]
		}
		mean := sum * inv
		for k := range dr {
			dr[k] -= mean
		}
	}
}

var (
	_ gg.SDOp = (*pearsonOp)(nil)
	_ gg.Op   = (*pearsonGradOp)(nil)
)
