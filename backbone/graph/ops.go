package graph

import (
	"fmt"
	"math"
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
		switch k.kind {
		case binAdd:
			for i := range y.data {
				y.data[i] = x0.data[i] + x1.data[i]
			}
		case binSub:
			for i := range y.data {
				y.data[i] = x0.data[i] - x1.data[i]
			}
		case binMul:
			for i := range y.data {
				y.data[i] = x0.data[i] * x1.data[i]
			}
		}
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
	y := a.tensor(in[0].shape)
	for i, v := range in[0].data {
		if v > 0 {
			y.data[i] = v
		}
	}
	return y, nil
}

// backward passes the gradient where x > 0 (0 at exactly 0, as PyTorch).
func (reluK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	if x, ok := any(in[0].data).([]float32); ok {
		passGrad32(x, any(g.data).([]float32), any(gin[0].data).([]float32), 0, float32(math.Inf(1)))
		return nil
	}
	for i, v := range in[0].data {
		gin[0].data[i] = 0
		if v > 0 {
			gin[0].data[i] = g.data[i]
		}
	}
	return nil
}

func (reluK[T]) writesGrad([]*tensor[T], int) bool { return true }

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
	for i, v := range in[0].data {
		y.data[i] = min(max(v, lo), hi)
	}
	return y, nil
}

// backward passes the gradient where lo < x < hi strictly (PyTorch's hardtanh/ReLU6 rule).
func (k *clipK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	if x, ok := any(in[0].data).([]float32); ok {
		passGrad32(x, any(g.data).([]float32), any(gin[0].data).([]float32), float32(k.lo), float32(k.hi))
		return nil
	}
	lo, hi := T(k.lo), T(k.hi)
	gd, dx := g.data[:len(in[0].data)], gin[0].data[:len(in[0].data)]
	for i, v := range in[0].data {
		dx[i] = 0
		if v > lo && v < hi {
			dx[i] = gd[i]
		}
	}
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
	for i, v := range x {
		s1 := int32(math.Float32bits(v - lo))
		s2 := int32(math.Float32bits(hi - v))
		m := uint32(((-s1 & ^s1) >> 31) & ((-s2 & ^s2) >> 31))
		dx[i] = math.Float32frombits(math.Float32bits(g[i]) & m)
	}
}

type identityK[T float] struct{}

func (identityK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	y := a.uninit(in[0].shape)
	copy(y.data, in[0].data)
	return y, nil
}

func (identityK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	copy(gin[0].data, g.data)
	return nil
}

func (identityK[T]) writesGrad([]*tensor[T], int) bool { return true }

// ---- Reshape, Flatten (copies with a new shape) ----

type reshapeK[T float] struct {
	target    []int64 // Reshape: the shape input (0 copies, -1 infers); nil for Flatten
	allowZero bool
	flatAxis  int // Flatten axis (possibly negative)
	flatten   bool
}

func (k *reshapeK[T]) outShape(s []int) ([]int, error) {
	if k.flatten {
		ax := k.flatAxis
		if ax < 0 {
			ax += len(s)
		}
		if ax < 0 || ax > len(s) {
			return nil, fmt.Errorf("axis %d out of range for input %s", k.flatAxis, shapeString(s))
		}
		return []int{numel(s[:ax]), numel(s[ax:])}, nil
	}
	out := make([]int, len(k.target))
	infer := -1
	known := 1
	for i, d := range k.target {
		switch {
		case d == 0 && !k.allowZero:
			if i >= len(s) {
				return nil, fmt.Errorf("shape %v copies axis %d of input %s, which has no such axis", k.target, i, shapeString(s))
			}
			out[i] = s[i]
		case d == -1:
			if infer >= 0 {
				return nil, fmt.Errorf("shape %v has more than one -1", k.target)
			}
			infer = i
			continue
		case d < 0:
			return nil, fmt.Errorf("shape %v has a negative size", k.target)
		default:
			out[i] = int(d)
		}
		known *= out[i]
	}
	total := numel(s)
	if infer >= 0 {
		if known == 0 || total%known != 0 {
			return nil, fmt.Errorf("cannot reshape input %s to %v", shapeString(s), k.target)
		}
		out[infer] = total / known
	}
	if numel(out) != total {
		return nil, fmt.Errorf("cannot reshape input %s (%d values) to %s", shapeString(s), total, shapeString(out))
	}
	return out, nil
}

func (k *reshapeK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	shape, err := k.outShape(in[0].shape)
	if err != nil {
		return nil, err
	}
	y := a.uninit(shape)
	copy(y.data, in[0].data)
	return y, nil
}

func (k *reshapeK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	copy(gin[0].data, g.data)
	return nil
}

func (k *reshapeK[T]) writesGrad([]*tensor[T], int) bool { return true }

// ---- Concat ----

type concatK[T float] struct{ axis int }

// shape returns the output shape (the data of in is not read).
func (k *concatK[T]) shape(in []*tensor[T]) ([]int, error) {
	r := len(in[0].shape)
	ax, ok := normAxis(k.axis, r)
	if !ok {
		return nil, fmt.Errorf("axis %d out of range for rank %d", k.axis, r)
	}
	shape := append([]int(nil), in[0].shape...)
	shape[ax] = 0
	for _, t := range in {
		if len(t.shape) != r {
			return nil, fmt.Errorf("inputs have different ranks: %s", shapesOf(in))
		}
		for i := range shape {
			if i != ax && t.shape[i] != shape[i] {
				return nil, fmt.Errorf("inputs differ outside axis %d: %s", ax, shapesOf(in))
			}
		}
		shape[ax] += t.shape[ax]
	}
	return shape, nil
}

func (k *concatK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	shape, err := k.shape(in)
	if err != nil {
		return nil, err
	}
	ax, _ := normAxis(k.axis, len(shape))
	y := a.uninit(shape)
	outer := numel(shape[:ax])
	inner := numel(shape[ax+1:])
	off := 0
	for _, t := range in {
		blk := t.shape[ax] * inner
		for o := 0; o < outer; o++ {
			copy(y.data[o*shape[ax]*inner+off:], t.data[o*blk:(o+1)*blk])
		}
		off += blk
	}
	return y, nil
}

func (k *concatK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	ax, _ := normAxis(k.axis, len(out.shape))
	outer := numel(out.shape[:ax])
	inner := numel(out.shape[ax+1:])
	off := 0
	for i, t := range in {
		blk := t.shape[ax] * inner
		if gin[i] != nil {
			for o := 0; o < outer; o++ {
				src := g.data[o*out.shape[ax]*inner+off:]
				dst := gin[i].data[o*blk : (o+1)*blk]
				for j := range dst {
					dst[j] += src[j]
				}
			}
		}
		off += blk
	}
	return nil
}

func shapesOf[T float](ts []*tensor[T]) string {
	s := make([][]int, len(ts))
	for i, t := range ts {
		s[i] = t.shape
	}
	return joinShapes(s)
}

// ---- BatchNormalization (inference, frozen statistics) ----

// bnK computes y = scale·(x − mean)/sqrt(var + ε) + bias per channel (axis 1). scale and bias
// are inputs 1 and 2 (constants or parameters); mean and var are frozen.
type bnK[T float] struct {
	mean, invStd []float64
}

func (k *bnK[T]) check(in []*tensor[T]) (n, c, inner int, err error) {
	x := in[0]
	if len(x.shape) < 2 {
		return 0, 0, 0, fmt.Errorf("input %s has no channel axis", shapeString(x.shape))
	}
	c = x.shape[1]
	if c != len(k.mean) || len(in[1].data) != c || len(in[2].data) != c {
		return 0, 0, 0, fmt.Errorf("input %s has %d channels; scale, bias, mean and var must have as many values (%d, %d, %d)", shapeString(x.shape), c, len(in[1].data), len(in[2].data), len(k.mean))
	}
	return x.shape[0], c, numel(x.shape[2:]), nil
}

func (k *bnK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	n, c, inner, err := k.check(in)
	if err != nil {
		return nil, err
	}
	x, sc, b := in[0], in[1].data, in[2].data
	y := a.uninit(x.shape)
	for i := 0; i < n; i++ {
		for ch := 0; ch < c; ch++ {
			a := T(float64(sc[ch]) * k.invStd[ch])
			o := T(float64(b[ch]) - float64(sc[ch])*k.invStd[ch]*k.mean[ch])
			off := (i*c + ch) * inner
			for j, v := range x.data[off : off+inner] {
				y.data[off+j] = a*v + o
			}
		}
	}
	return y, nil
}

func (k *bnK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	n, c, inner, _ := k.check(in)
	x, sc := in[0], in[1].data
	for i := 0; i < n; i++ {
		for ch := 0; ch < c; ch++ {
			off := (i*c + ch) * inner
			gs := g.data[off : off+inner]
			if gin[0] != nil {
				a := T(float64(sc[ch]) * k.invStd[ch])
				dx := gin[0].data[off : off+inner]
				for j, v := range gs {
					dx[j] += a * v
				}
			}
			if gin[1] != nil || gin[2] != nil {
				var sg, sgx float64
				for j, v := range gs {
					sg += float64(v)
					sgx += float64(v) * (float64(x.data[off+j]) - k.mean[ch]) * k.invStd[ch]
				}
				if gin[1] != nil {
					gin[1].data[ch] += T(sgx)
				}
				if gin[2] != nil {
					gin[2].data[ch] += T(sg)
				}
			}
		}
	}
	return nil
}

// ---- Softmax, LpNormalization ----

// softmaxK normalizes over groups: legacy (opset < 13) flattens the input to 2-D at axis and
// normalizes each row; otherwise only along axis.
type softmaxK[T float] struct {
	axis   int
	legacy bool
}

// layout returns (outer, n, inner): groups of n values with stride inner.
func axisLayout(shape []int, axis int, legacy bool) (outer, n, inner int, err error) {
	r := len(shape)
	if legacy {
		ax := axis
		if ax < 0 {
			ax += r
		}
		if ax < 0 || ax > r {
			return 0, 0, 0, fmt.Errorf("axis %d out of range for input %s", axis, shapeString(shape))
		}
		return numel(shape[:ax]), numel(shape[ax:]), 1, nil
	}
	ax, ok := normAxis(axis, r)
	if !ok {
		return 0, 0, 0, fmt.Errorf("axis %d out of range for input %s", axis, shapeString(shape))
	}
	return numel(shape[:ax]), shape[ax], numel(shape[ax+1:]), nil
}

func (k *softmaxK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	x := in[0]
	outer, n, inner, err := axisLayout(x.shape, k.axis, k.legacy)
	if err != nil {
		return nil, err
	}
	y := a.uninit(x.shape)
	for o := 0; o < outer; o++ {
		for j := 0; j < inner; j++ {
			base := o*n*inner + j
			mx := math.Inf(-1)
			for i := 0; i < n; i++ {
				mx = math.Max(mx, float64(x.data[base+i*inner]))
			}
			var s float64
			for i := 0; i < n; i++ {
				e := math.Exp(float64(x.data[base+i*inner]) - mx)
				y.data[base+i*inner] = T(e)
				s += e
			}
			for i := 0; i < n; i++ {
				y.data[base+i*inner] = T(float64(y.data[base+i*inner]) / s)
			}
		}
	}
	return y, nil
}

// backward: dx = y ⊙ (g − Σ g⊙y) per group.
func (k *softmaxK[T]) backward(a *arena[T], in []*tensor[T], y, g *tensor[T], gin []*tensor[T]) error {
	outer, n, inner, _ := axisLayout(y.shape, k.axis, k.legacy)
	for o := 0; o < outer; o++ {
		for j := 0; j < inner; j++ {
			base := o*n*inner + j
			var s float64
			for i := 0; i < n; i++ {
				s += float64(g.data[base+i*inner]) * float64(y.data[base+i*inner])
			}
			for i := 0; i < n; i++ {
				p := base + i*inner
				gin[0].data[p] += T(float64(y.data[p]) * (float64(g.data[p]) - s))
			}
		}
	}
	return nil
}

// lpNormK divides by the L1 or L2 norm along axis; a zero norm gives 0 (and a zero gradient).
type lpNormK[T float] struct {
	axis, p int
}

func (k *lpNormK[T]) norms(x *tensor[T]) (outer, n, inner int, norms []float64, err error) {
	outer, n, inner, err = axisLayout(x.shape, k.axis, false)
	if err != nil {
		return
	}
	norms = make([]float64, outer*inner)
	for o := 0; o < outer; o++ {
		for j := 0; j < inner; j++ {
			base := o*n*inner + j
			var s float64
			for i := 0; i < n; i++ {
				v := float64(x.data[base+i*inner])
				if k.p == 1 {
					s += math.Abs(v)
				} else {
					s += v * v
				}
			}
			if k.p == 2 {
				s = math.Sqrt(s)
			}
			norms[o*inner+j] = s
		}
	}
	return
}

func (k *lpNormK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	x := in[0]
	outer, n, inner, norms, err := k.norms(x)
	if err != nil {
		return nil, err
	}
	y := a.tensor(x.shape)
	for o := 0; o < outer; o++ {
		for j := 0; j < inner; j++ {
			nm := norms[o*inner+j]
			if nm == 0 {
				continue
			}
			base := o*n*inner + j
			for i := 0; i < n; i++ {
				y.data[base+i*inner] = T(float64(x.data[base+i*inner]) / nm)
			}
		}
	}
	return y, nil
}

// backward: p=2: dx = (g − y·Σ g·y)/‖x‖; p=1: dx = g/‖x‖₁ − sign(x)·Σ g·x/‖x‖₁².
func (k *lpNormK[T]) backward(a *arena[T], in []*tensor[T], y, g *tensor[T], gin []*tensor[T]) error {
	x := in[0]
	outer, n, inner, norms, _ := k.norms(x)
	for o := 0; o < outer; o++ {
		for j := 0; j < inner; j++ {
			nm := norms[o*inner+j]
			if nm == 0 {
				continue
			}
			base := o*n*inner + j
			var s float64
			for i := 0; i < n; i++ {
				p := base + i*inner
				if k.p == 2 {
					s += float64(g.data[p]) * float64(y.data[p])
				} else {
					s += float64(g.data[p]) * float64(x.data[p])
				}
			}
			for i := 0; i < n; i++ {
				p := base + i*inner
				gv := float64(g.data[p])
				var d float64
				if k.p == 2 {
					d = (gv - float64(y.data[p])*s) / nm
				} else {
					sg := 0.0
					if xv := x.data[p]; xv > 0 {
						sg = 1
					} else if xv < 0 {
						sg = -1
					}
					d = gv/nm - sg*s/(nm*nm)
				}
				gin[0].data[p] += T(d)
			}
		}
	}
	return nil
}
