package head

import (
	"fmt"
	"math"
)

// StepLossInputGrad is StepLoss that also returns dLoss/dx: (n, In) float32 row-major, the
// gradient flowing back into the features, for training whatever computes them (e.g. the last
// blocks of the backbone) together with the head. Param Grads are filled as by StepLoss.
//
// The gradient is dx = g · W0, with g the graph's (n, out0) gradient of the input layer's
// pre-activation output and W0 the input layer's (out0, In) weight, accumulated in float64 and
// returned as float32. A NaN or infinity in it returns an error wrapping ErrNonFinite.
func (h *Head) StepLossInputGrad(x []float32, n int, labels []int, anchors []bool, l LossConfig) (StepResult, []float32, error) {
	res, err := h.StepLoss(x, n, labels, anchors, l)
	if err != nil {
		return res, nil, err
	}
	// StepLoss built (or reused) the graph of this batch size and loss and left it in the cache.
	sg, ok := h.graphs[graphKey{n, l.key()}]
	if !ok {
		panic("head: StepLossInputGrad: the step's graph is not cached")
	}
	l0 := h.layers[0]
	out, in := l0.out, l0.in
	g := make([]float64, n*out)
	switch g0 := sg.g0.Data().(type) {
	case []float32:
		for i, v := range g0[:n*out] {
			g[i] = float64(v)
		}
	case []float64:
		copy(g, g0[:n*out])
	default:
		panic(fmt.Sprintf("head: unexpected gradient data %T", g0))
	}
	dx := make([]float32, n*in)
	w := l0.w.Value
	parallelRows(n, n*out*in, func(lo, hi int) {
		acc := make([]float64, in)
		for i := lo; i < hi; i++ {
			clear(acc)
			for o, gi := range g[i*out : (i+1)*out] {
				if gi != 0 {
					axpy64(in, gi, w[o*in:(o+1)*in], acc)
				}
			}
			for k, v := range acc {
				dx[i*in+k] = float32(v)
			}
		}
	})
	for _, v := range dx {
		if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
			return res, nil, fmt.Errorf("head: step: gradient of the input features: %w", ErrNonFinite)
		}
	}
	return res, dx, nil
}
