package train

import (
	"fmt"
	"math"
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
		for i, g := range p.Grad {
			w := p.Value[i]
			if a.kind == OptAdamW {
				w -= lr * a.wd * w
			} else {
				g += a.wd * w
			}
			m[i] = a.b1*m[i] + (1-a.b1)*g
			v[i] = a.b2*v[i] + (1-a.b2)*g*g
			mh := m[i] / bc1
			switch {
			case a.kind != OptRAdam:
				w -= lr * mh / (math.Sqrt(v[i]/bc2) + a.eps)
			case rectified:
				w -= lr * r * mh / (math.Sqrt(v[i]/bc2) + a.eps)
			default:
				w -= lr * mh
			}
			p.Value[i] = w
		}
	}
}
