package graph

import (
	"fmt"
	"strings"

	"github.com/grouploss/pipeline/internal/parallel"
)

type float interface{ ~float32 | ~float64 }

// tensor is a dense row-major array with its full shape (batch axis included).
type tensor[T float] struct {
	shape []int
	data  []T
}

func newTensor[T float](shape []int) *tensor[T] {
	return &tensor[T]{shape: append([]int(nil), shape...), data: make([]T, numel(shape))}
}

// arena recycles tensor buffers between runs of a gorgonia Op (each Op has its own), so that
// the activations and gradients of a step reuse the memory of the previous one (fresh memory
// costs page faults). It is used by one goroutine at a time.
type arena[T float] struct {
	free map[int][][]T
}

// tensor returns a zeroed tensor of the given shape.
func (a *arena[T]) tensor(shape []int) *tensor[T] {
	t := a.uninit(shape)
	clear(t.data)
	return t
}

// uninit returns a tensor of the given shape with arbitrary contents, for kernels that write
// every element.
func (a *arena[T]) uninit(shape []int) *tensor[T] {
	n := numel(shape)
	t := &tensor[T]{shape: append([]int(nil), shape...)}
	if l := a.free[n]; len(l) > 0 {
		t.data = l[len(l)-1]
		a.free[n] = l[:len(l)-1]
		return t
	}
	t.data = make([]T, n)
	return t
}

// put gives t's buffer back; t must not be used afterwards.
func (a *arena[T]) put(t *tensor[T]) {
	if t == nil || len(t.data) == 0 {
		return
	}
	if a.free == nil {
		a.free = map[int][][]T{}
	}
	a.free[len(t.data)] = append(a.free[len(t.data)], t.data)
	t.data = nil
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

func shapeString(s []int) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func stridesOf(shape []int) []int {
	s := make([]int, len(shape))
	st := 1
	for i := len(shape) - 1; i >= 0; i-- {
		s[i] = st
		st *= shape[i]
	}
	return s
}

// normAxis maps a possibly negative axis into [0, rank); ok is false when out of range.
func normAxis(axis, rank int) (int, bool) {
	if axis < 0 {
		axis += rank
	}
	return axis, axis >= 0 && axis < rank
}

// broadcastShapes returns the numpy broadcast of the shapes.
func broadcastShapes(shapes ...[]int) ([]int, error) {
	r := 0
	for _, s := range shapes {
		r = max(r, len(s))
	}
	out := make([]int, r)
	for i := range out {
		out[i] = 1
	}
	for _, s := range shapes {
		off := r - len(s)
		for i, d := range s {
			o := out[off+i]
			switch {
			case d == o || d == 1:
			case o == 1:
				out[off+i] = d
			default:
				return nil, fmt.Errorf("shapes %s are not broadcastable", joinShapes(shapes))
			}
		}
	}
	return out, nil
}

func joinShapes(shapes [][]int) string {
	parts := make([]string, len(shapes))
	for i, s := range shapes {
		parts[i] = shapeString(s)
	}
	return strings.Join(parts, " and ")
}

// bstrides returns the strides of shape s broadcast to out (0 on broadcast axes).
func bstrides(s, out []int) []int {
	st := stridesOf(s)
	r := make([]int, len(out))
	off := len(out) - len(s)
	for i := range s {
		if s[i] != 1 {
			r[off+i] = st[i]
		}
	}
	return r
}

// bcastRuns iterates over the output shape out in runs along the last axis: f(o, a, b, n, as, bs)
// covers output elements o..o+n-1 whose operands start at offsets a and b and step by as and bs.
func bcastRuns(out, sa, sb []int, f func(o, a, b, n, as, bs int)) {
	r := len(out)
	if numel(out) == 0 {
		return
	}
	if r == 0 {
		f(0, 0, 0, 1, 0, 0)
		return
	}
	last := out[r-1]
	idx := make([]int, r)
	o, a, b := 0, 0, 0
	for {
		f(o, a, b, last, sa[r-1], sb[r-1])
		o += last
		// advance the multi-index over axes 0..r-2
		ax := r - 2
		for ; ax >= 0; ax-- {
			idx[ax]++
			a += sa[ax]
			b += sb[ax]
			if idx[ax] < out[ax] {
				break
			}
			a -= sa[ax] * out[ax]
			b -= sb[ax] * out[ax]
			idx[ax] = 0
		}
		if ax < 0 {
			return
		}
	}
}

// reduceTo adds g (shape out) into dst (shape s, broadcast to out) along the broadcast axes.
func reduceTo[T float](dst *tensor[T], g *tensor[T]) {
	if sameShape(dst.shape, g.shape) {
		parallel.Range(len(g.data), len(g.data), func(lo, hi int) {
			d := dst.data[lo:hi]
			for i, v := range g.data[lo:hi] {
				d[i] += v
			}
		})
		return
	}
	sd := bstrides(dst.shape, g.shape)
	zero := make([]int, len(g.shape))
	bcastRuns(g.shape, sd, zero, func(o, a, _, n, as, _ int) {
		if as == 0 {
			var s T
			for _, v := range g.data[o : o+n] {
				s += v
			}
			dst.data[a] += s
			return
		}
		for i := 0; i < n; i++ {
			dst.data[a+i*as] += g.data[o+i]
		}
	})
}
