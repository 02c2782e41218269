package graph

import (
	"math"

	"github.com/grouploss/pipeline/backbone/graph/internal/simd"
	"github.com/grouploss/pipeline/internal/parallel"
)

// kernel is one operator's forward and backward computation on tensors of element type T: the
// work of a node's gorgonia Ops (gorgonia.go). forward returns a new output tensor (it may keep
// state for backward in the kernel: each node has its own kernel, and gorgonia runs the
// backward after the forward of the same run). backward adds the gradients of the inputs to
// gin[i] (or sets them, see gradWriter), which is nil for an input whose gradient is not asked for; out is the forward output
// and g the gradient of the output. Tensors come from the arena a, which recycles buffers
// between runs.
type kernel[T float] interface {
	forward(a *arena[T], in []*tensor[T]) (*tensor[T], error)
	backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error
}

// gradWriter is a kernel whose backward sets every element of gin[i] (instead of adding to it)
// when writesGrad(in, i): that gradient's buffer then needs no zeroing first, which saves a pass
// over the largest tensors of a step (the gradients of the activations).
type gradWriter[T float] interface {
	writesGrad(in []*tensor[T], i int) bool
}

// ---- element-wise binary ops with numpy broadcasting: Add, Sub, Mul ----

type binKind int

const (
	binAdd binKind = iota
	binSub
	binMul
)

type binaryK[T float] struct{ kind binKind }

func (k *binaryK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	x0, x1 := in[0], in[1]
	shape, err := broadcastShapes(x0.shape, x1.shape)
	if err != nil {
		return nil, err
	}
	y := a.uninit(shape)
	if sameShape(x0.shape, x1.shape) {
		parallel.Range(len(y.data), len(y.data), func(lo, hi int) {
			yd, a, b := y.data[lo:hi], x0.data[lo:hi], x1.data[lo:hi]
			switch k.kind {
			case binAdd:
				for i := range yd {
					yd[i] = a[i] + b[i]
				}
			case binSub:
				for i := range yd {
					yd[i] = a[i] - b[i]
				}
			case binMul:
				for i := range yd {
					yd[i] = a[i] * b[i]
				}
			}
		})
		return y, nil
	}
	bcastRuns(shape, bstrides(x0.shape, shape), bstrides(x1.shape, shape), func(o, ao, bo, n, as, bs int) {
		yd := y.data[o : o+n]
		switch k.kind {
		case binAdd:
			for i := range yd {
				yd[i] = x0.data[ao+i*as] + x1.data[bo+i*bs]
			}
		case binSub:
			for i := range yd {
				yd[i] = x0.data[ao+i*as] - x1.data[bo+i*bs]
			}
		case binMul:
			for i := range yd {
				yd[i] = x0.data[ao+i*as] * x1.data[bo+i*bs]
			}
		}
	})
	return y, nil
}

func (k *binaryK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	switch k.kind {
	case binAdd, binSub:
		if gin[0] != nil {
			reduceTo(gin[0], g)
		}
		if gin[1] != nil {
			if k.kind == binAdd {
				reduceTo(gin[1], g)
			} else {
				neg := a.tensor(g.shape)
				for i, v := range g.data {
					neg.data[i] = -v
				}
				reduceTo(gin[1], neg)
				a.put(neg)
			}
		}
	case binMul:
		// d/da = g·b, d/db = g·a, each summed over its broadcast axes.
		for side := 0; side < 2; side++ {
			if gin[side] == nil {
				continue
			}
			other := in[1-side]
			prod := a.tensor(g.shape)
			bcastRuns(g.shape, bstrides(other.shape, g.shape), bstrides(other.shape, g.shape), func(o, so, _, n, ss, _ int) {
				for i := 0; i < n; i++ {
					prod.data[o+i] = g.data[o+i] * other.data[so+i*ss]
				}
			})
			reduceTo(gin[side], prod)
			a.put(prod)
		}
	}
	return nil
}

// ---- Relu, Clip, Identity/Dropout ----

type reluK[T float] struct{}

func (reluK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	y := a.uninit(in[0].shape)
	x := in[0].data
	parallel.Range(len(x), len(x), func(lo, hi int) {
		yd := y.data[lo:hi]
		for i, v := range x[lo:hi] {
			yd[i] = 0
			if v > 0 {
				yd[i] = v
			}
		}
	})
	return y, nil
}

// backward passes the gradient where x > 0 (0 at exactly 0, as PyTorch).
func (reluK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	if x, ok := any(in[0].data).([]float32); ok {
		passGrad32(x, any(g.data).([]float32), any(gin[0].data).([]float32), 0, float32(math.Inf(1)))
		return nil
	}
	x := in[0].data
	parallel.Range(len(x), len(x), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			gin[0].data[i] = 0
			if x[i] > 0 {
				gin[0].data[i] = g.data[i]
			}
		}
	})
	return nil
}

func (reluK[T]) writesGrad([]*tensor[T], int) bool { return true }

// noSIMD makes the float32 kernels that internal/simd has in C (depthwise convolutions, clips)
// run their Go loops (tests compare the two).
var noSIMD = false

type clipK[T float] struct{ lo, hi float64 }

func (k *clipK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	y := a.uninit(in[0].shape)
	lo, hi := T(k.lo), T(k.hi)
	if k.lo > k.hi { // ONNX: every value becomes max when min > max
		for i := range y.data {
			y.data[i] = hi
		}
		return y, nil
	}
	x := in[0].data
	if x32, ok := any(x).([]float32); ok && simd.Supported && !noSIMD {
		y32 := any(y.data).([]float32)
		parallel.Range(len(x), len(x), func(i0, i1 int) { simd.Clip(x32[i0:i1], y32[i0:i1], float32(lo), float32(hi)) })
		return y, nil
	}
	parallel.Range(len(x), len(x), func(i0, i1 int) {
		yd := y.data[i0:i1]
		for i, v := range x[i0:i1] {
			yd[i] = min(max(v, lo), hi)
		}
	})
	return y, nil
}

// backward passes the gradient where lo < x < hi strictly (PyTorch's hardtanh/ReLU6 rule).
func (k *clipK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	if x, ok := any(in[0].data).([]float32); ok {
		passGrad32(x, any(g.data).([]float32), any(gin[0].data).([]float32), float32(k.lo), float32(k.hi))
		return nil
	}
	lo, hi := T(k.lo), T(k.hi)
	x := in[0].data
	gd, dx := g.data[:len(x)], gin[0].data[:len(x)]
	parallel.Range(len(x), len(x), func(i0, i1 int) {
		for i := i0; i < i1; i++ {
			dx[i] = 0
			if v := x[i]; v > lo && v < hi {
				dx[i] = gd[i]
			}
		}
	})
	return nil
}

func (k *clipK[T]) writesGrad([]*tensor[T], int) bool { return true }

// passGrad32 sets dx[i] to g[i] where lo < x[i] < hi and to 0 elsewhere, without data-dependent branches (about
// half the values of a ReLU6-style clip saturate, and mispredicted branches cost 3× the loop).
// It uses that for floats a − b > 0 exactly when a > b (gradual underflow): the sign of the
// difference's bit pattern, read as an integer s, gives the mask (−s & ^s) >> 31 (all ones when
// s > 0; -0.0 gives 0).
func passGrad32(x, g, dx []float32, lo, hi float32) {
	g, dx = g[:len(x)], dx[:len(x)]
	if simd.Supported && !noSIMD {
		parallel.Range(len(x), len(x), func(i0, i1 int) { simd.ClipGrad(x[i0:i1], g[i0:i1], dx[i0:i1], lo, hi) })
		return
	}
	parallel.Range(len(x), len(x), func(i0, i1 int) {
		x := x[i0:i1]
		g, dx := g[i0:i1][:len(x)], dx[i0:i1][:len(x)]
		for i, v := range x {
			s1 := int32(math.Float32bits(v - lo))
			s2 := int32(math.Float32bits(hi - v))
			m := uint32(((-s1 & ^s1) >> 31) & ((-s2 & ^s2) >> 31))
			dx[i] = math.Float32frombits(math.Float32bits(g[i]) & m)
		}
	})
}

type identityK[T float] struct{}

func (identityK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	y := a.uninit(in[0].shape)
	parallelCopy(y.data, in[0].data)
	return y, nil
}

func (identityK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	parallelCopy(gin[0].data, g.data)
	return nil
}

func (identityK[T]) writesGrad([]*tensor[T], int) bool { return true }
