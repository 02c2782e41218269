package graph

import "fmt"

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
	parallelCopy(y.data, in[0].data)
	return y, nil
}

func (k *reshapeK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	parallelCopy(gin[0].data, g.data)
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
