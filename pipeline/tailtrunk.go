package pipeline

import (
	"fmt"

	gg "gorgonia.org/gorgonia"
	gt "gorgonia.org/tensor"

	"github.com/grouploss/pipeline/backbone/graph"
	"github.com/grouploss/pipeline/head"
)

// tailTrunk is the decoded tail of the backbone followed by the feature transform (centering on
// a fixed mean, L2 normalization) as the head's trunk: one gorgonia graph runs from the
// activations at the cut to the loss, and one gradient pass gives the gradients of the tail's and
// the head's parameters.
type tailTrunk struct {
	g         *graph.Graph
	inShape   []int
	featDim   int
	normalize bool
	// center is the model's mean feature (nil: no centering). Every built graph's centering leaf
	// reads center32 or center64 (by dtype), which setCenter refreshes before each step, so a
	// restored center takes effect.
	center   []float32
	center32 []float32
	center64 []float64
}

// setCenter copies center into the centering leaves' values.
func (t *tailTrunk) setCenter(center []float32) {
	t.center = center
	if t.center32 != nil {
		copy(t.center32, center)
	}
	for i, v := range center {
		if t.center64 == nil {
			break
		}
		t.center64[i] = float64(v)
	}
}

func (t *tailTrunk) InputShape() []int { return t.inShape }

func (t *tailTrunk) Build(x *gg.Node) (*gg.Node, []head.TrunkParam, error) {
	out, params, err := t.g.AddTo(x.Graph(), x)
	if err != nil {
		return nil, nil, err
	}
	n := x.Shape()[0]
	f, err := gg.Reshape(out, gt.Shape{n, t.featDim})
	if err != nil {
		return nil, nil, fmt.Errorf("pipeline: tail output %v to (%d, %d): %w", out.Shape(), n, t.featDim, err)
	}
	if t.center != nil {
		var backing any
		if x.Dtype() == gt.Float64 {
			if t.center64 == nil {
				t.center64 = make([]float64, t.featDim)
			}
			backing = t.center64
		} else {
			if t.center32 == nil {
				t.center32 = make([]float32, t.featDim)
			}
			backing = t.center32
		}
		t.setCenter(t.center)
		c := gg.NewMatrix(x.Graph(), x.Dtype(), gg.WithShape(1, t.featDim), gg.WithName("center"),
			gg.WithValue(gt.New(gt.WithShape(1, t.featDim), gt.WithBacking(backing))))
		if f, err = gg.BroadcastSub(f, c, nil, []byte{0}); err != nil {
			return nil, nil, fmt.Errorf("pipeline: centering the tail's features: %w", err)
		}
	}
	if t.normalize {
		if f, err = graph.Normalize(f); err != nil {
			return nil, nil, err
		}
	}
	tps := make([]head.TrunkParam, len(params))
	for i, p := range params {
		tps[i] = head.TrunkParam{Name: tailParamPrefix + p.Param.Name, Node: p.Node, Value: p.Param.Value, Grad: p.Param.Grad}
	}
	return f, tps, nil
}
