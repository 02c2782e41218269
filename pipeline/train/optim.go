package train

import (
	"fmt"
	"math"

	"github.com/grouploss/pipeline/internal/parallel"
)

// Tensor is one trainable parameter as the optimizer sees it: its values and the gradient of the
// loss with respect to them, of equal length.
type Tensor struct {
	Name        string
	Value, Grad []float64
}

// Optimizer updates parameters in place from their gradients.
type Optimizer interface {
	// Step applies one update with learning rate lr to every tensor.
	Step(params []Tensor, lr float64)
	// State returns the optimizer's moments and step count, for checkpoints.
	State() OptimizerState
	// SetState restores what State returned.
	SetState(OptimizerState) error
}

// OptimizerState is the serializable state of Adam and RAdam.
type OptimizerState struct {
	Steps int                  `json:"steps"`
	M     map[string][]float64 `json:"m"`
	V     map[string][]float64 `json:"v"`
}

// OptimizerKind names an optimizer in the config.
type OptimizerKind string

const (
	OptAdam  OptimizerKind = "adam"
	OptAdamW OptimizerKind = "adamw"
	OptRAdam OptimizerKind = "radam"
)

// NewOptimizer returns Adam, AdamW (decoupled weight decay) or RAdam (Liu et al. 2020, as in
// PyTorch's torch.optim.RAdam) with betas (0.9, 0.999) and eps 1e-8. For adam and radam the weight
// decay is added to the gradient (L2, PyTorch's default); adamw decays the weights directly.
func NewOptimizer(kind OptimizerKind, weightDecay float64) (Optimizer, error) {
	switch kind {
	case OptAdam, OptAdamW, OptRAdam:
	default:
		return nil, fmt.Errorf("train: unknown optimizer %q (want adam, adamw or radam)", kind)
	}
	if weightDecay < 0 || math.IsNaN(weightDecay) {
		return nil, fmt.Errorf("train: weight decay %g must be >= 0", weightDecay)
	}
	return &adam{kind: kind, wd: weightDecay, b1: 0.9, b2: 0.999, eps: 1e-8,
		st: OptimizerState{M: map[string][]float64{}, V: map[string][]float64{}}}, nil
}

type adam struct {
	kind       OptimizerKind
	wd, b1, b2 float64
	eps        float64
	st         OptimizerState
}

func (a *adam) State() OptimizerState { return a.st }

func (a *adam) SetState(s OptimizerState) error {
	if s.M == nil || s.V == nil {
		return fmt.Errorf("train: optimizer state has no moments")
	}
	a.st = s
	return nil
}

func (a *adam) Step(params []Tensor, lr float64) {
	a.st.Steps++
	t := float64(a.st.Steps)
	bc1 := 1 - math.Pow(a.b1, t)
	bc2 := 1 - math.Pow(a.b2, t)
	// RAdam's variance rectification.
	rectified, r := true, 1.0
	if a.kind == OptRAdam {
		rhoInf := 2/(1-a.b2) - 1
		rho := rhoInf - 2*t*math.Pow(a.b2, t)/bc2
		if rho > 5 {
			r = math.Sqrt((rho - 4) * (rho - 2) * rhoInf / ((rhoInf - 4) * (rhoInf - 2) * rho))
		} else {
			rectified = false
		}
	}
	for _, p := range params {
		if len(p.Value) != len(p.Grad) {
			panic(fmt.Sprintf("train: parameter %q has %d values and %d gradients", p.Name, len(p.Value), len(p.Grad)))
		}
		m, ok := a.st.M[p.Name]
		if !ok {
			m = make([]float64, len(p.Value))
			a.st.M[p.Name] = m
			a.st.V[p.Name] = make([]float64, len(p.Value))
		}
		v := a.st.V[p.Name]
		parallel.Range(len(p.Value), 8*len(p.Value), func(lo, hi int) {
			a.update(p.Value[lo:hi], p.Grad[lo:hi], m[lo:hi], v[lo:hi], lr, bc1, bc2, r, rectified)
		})
	}
}

// update applies one step to a slice of a tensor. Every element is independent of the others,
// so slices may be updated concurrently with results identical to a serial loop.
func (a *adam) update(ws, gs, m, v []float64, lr, bc1, bc2, r float64, rectified bool) {
	gs, m, v = gs[:len(ws)], m[:len(ws)], v[:len(ws)]
	k := adamConsts{b1: a.b1, b2: a.b2, c1: 1 - a.b1, c2: 1 - a.b2, gdecay: a.wd, wscale: 1, eps: a.eps}
	// L2 decay (Adam, RAdam) enters the gradient; decoupled decay (AdamW) scales the weight.
	if a.kind == OptAdamW {
		k.gdecay, k.wscale = 0, 1-lr*a.wd
	}
	if a.kind == OptRAdam && !rectified { // RAdam before rectification: SGD with momentum
		step := lr / bc1
		for i, g := range gs {
			w := ws[i] * k.wscale
			g += k.gdecay * w
			m[i] = k.b1*m[i] + k.c1*g
			v[i] = k.b2*v[i] + k.c2*g*g
			ws[i] = w - step*m[i]
		}
		return
	}
	if a.kind != OptRAdam {
		r = 1
	}
	k.step, k.isb = lr*r/bc1, 1/math.Sqrt(bc2)
	adamKernel(ws, gs, m, v, k)
}

// adamConsts are the per-step constants of an Adam update: betas, 1-betas, the weight decay as a
// gradient term (gdecay) or a weight scale (wscale), lr·r/bc1 (step) and 1/sqrt(bc2) (isb).
type adamConsts struct {
	b1, b2, c1, c2, gdecay, wscale, step, isb, eps float64
}

// adamStepGo is the Adam (and rectified RAdam) update, w -= lr·r·(m/bc1) / (sqrt(v/bc2) + eps)
// with the decay and the moments updated first. The loop is a fair part of a head step (680k
// parameters at the default sizes): adamKernel runs the same arithmetic 4 elements at a time
// where adam.c is built (amd64 with cgo) and the CPU has AVX2.
func adamStepGo(ws, gs, m, v []float64, k adamConsts) {
	gs, m, v = gs[:len(ws)], m[:len(ws)], v[:len(ws)]
	for i, g := range gs {
		w := ws[i] * k.wscale
		g += k.gdecay * w
		mi := k.b1*m[i] + k.c1*g
		vi := k.b2*v[i] + k.c2*g*g
		m[i], v[i] = mi, vi
		ws[i] = w - k.step*mi/(math.Sqrt(vi)*k.isb+k.eps)
	}
}
