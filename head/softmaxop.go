package head

import (
	"fmt"
	"math"

	"github.com/chewxy/hm"
	gg "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// softmaxOp is the row-wise softmax (log false) or log-softmax (log true) of an (n, k) matrix as
// one gorgonia Op, each row shifted by its maximum: gorgonia's own SoftMax shifts by a value from
// the first row (NaN for [[0, 0], [1000, 0]]), and composed from its basic ops (max, two
// broadcast subtractions, exp, sum, log, a broadcast division) it took seven nodes forward and
// as many backward on matrices of a few thousand values, where gorgonia's per-node cost
// dominates. Its gradient is softmaxGradOp, from the output and the output's gradient.
type softmaxOp struct {
	opID
	log  bool
	n, k int
	dt   tensor.Dtype
	y    *tensor.Dense
}

// softmaxNode returns the node of the row-wise softmax of a, or log-softmax with log.
func softmaxNode(a *gg.Node, log bool) (*gg.Node, error) {
	s := a.Shape()
	return gg.ApplyOp(&softmaxOp{opID: newOpID(), log: log, n: s[0], k: s[1], dt: a.Dtype()}, a)
}

func (o *softmaxOp) Arity() int    { return 1 }
func (o *softmaxOp) Type() hm.Type { return hm.NewFnType(matType(o.dt), matType(o.dt)) }
func (o *softmaxOp) InferShape(...gg.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.n, o.k}, nil
}

func (o *softmaxOp) Do(vs ...gg.Value) (gg.Value, error) {
	if o.y == nil {
		o.y = newDense(dtypeOf(o.dt), o.n, o.k)
	}
	switch a := vs[0].Data().(type) {
	case []float32:
		softmaxRows(o.y.Data().([]float32), a, o.n, o.k, o.log)
	case []float64:
		softmaxRows(o.y.Data().([]float64), a, o.n, o.k, o.log)
	}
	return o.y, nil
}

func (o *softmaxOp) String() string {
	if o.log {
		return fmt.Sprintf("logsoftmax(%d×%d)", o.n, o.k)
	}
	return fmt.Sprintf("softmax(%d×%d)", o.n, o.k)
}

func (o *softmaxOp) DiffWRT(int) []bool { return []bool{true} }

func (o *softmaxOp) SymDiff(inputs gg.Nodes, output, grad *gg.Node) (gg.Nodes, error) {
	d, err := gg.ApplyOp(&softmaxGradOp{opID: newOpID(), f: o}, output, grad)
	return gg.Nodes{d}, err
}

// softmaxGradOp computes the input gradient from the output y and its gradient g, row by row:
// softmax: y ⊙ (g − Σ g⊙y); log-softmax: g − exp(y) Σ g.
type softmaxGradOp struct {
	opID
	f *softmaxOp
	d *tensor.Dense
}

func (o *softmaxGradOp) Arity() int { return 2 }
func (o *softmaxGradOp) Type() hm.Type {
	m := matType(o.f.dt)
	return hm.NewFnType(m, m, m)
}
func (o *softmaxGradOp) InferShape(...gg.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.f.n, o.f.k}, nil
}

func (o *softmaxGradOp) Do(vs ...gg.Value) (gg.Value, error) {
	if o.d == nil {
		o.d = newDense(dtypeOf(o.f.dt), o.f.n, o.f.k)
	}
	switch y := vs[0].Data().(type) {
	case []float32:
		softmaxGrad(o.d.Data().([]float32), y, vs[1].Data().([]float32), o.f.n, o.f.k, o.f.log)
	case []float64:
		softmaxGrad(o.d.Data().([]float64), y, vs[1].Data().([]float64), o.f.n, o.f.k, o.f.log)
	}
	return o.d, nil
}

func (o *softmaxGradOp) String() string { return fmt.Sprintf("d%v", o.f) }

// softmaxRows sets each row of y to the softmax (or log-softmax) of a's row, shifted by the row
// maximum: sh = a − max, softmax = exp(sh) / Σ exp(sh), log-softmax = sh − log Σ exp(sh).
func softmaxRows[T float](y, a []T, n, k int, log bool) {
	for i := 0; i < n; i++ {
		ar, yr := a[i*k:(i+1)*k], y[i*k:(i+1)*k]
		mx := ar[0]
		for _, v := range ar[1:] {
			mx = max(mx, v)
		}
		var s T
		for j, v := range ar {
			e := T(math.Exp(float64(v - mx)))
			yr[j] = e
			s += e
		}
		if log {
			ls := T(math.Log(float64(s)))
			for j, v := range ar {
				yr[j] = (v - mx) - ls
			}
			continue
		}
		for j := range yr {
			yr[j] /= s
		}
	}
}

// softmaxGrad sets d to the gradient of the input of softmaxRows from its output y and the
// output's gradient g.
func softmaxGrad[T float](d, y, g []T, n, k int, log bool) {
	for i := 0; i < n; i++ {
		yr, gr, dr := y[i*k:(i+1)*k], g[i*k:(i+1)*k], d[i*k:(i+1)*k]
		var s T
		if log {
			for _, v := range gr {
				s += v
			}
			for j, v := range yr {
				dr[j] = gr[j] - T(math.Exp(float64(v)))*s
			}
			continue
		}
		for j, v := range yr {
			s += gr[j] * v
		}
		for j, v := range yr {
			dr[j] = v * (gr[j] - s)
		}
	}
}

var (
	_ gg.SDOp = (*softmaxOp)(nil)
	_ gg.Op   = (*softmaxGradOp)(nil)
)
