package graph

import (
	"fmt"
	"hash"
	"hash/fnv"
	"sync/atomic"

	"github.com/chewxy/hm"
	gg "gorgonia.org/gorgonia"
	gt "gorgonia.org/tensor"
)

// The decoded nodes become gorgonia Ops. gorgonia v0.9.18's own ops cannot stand in for ours:
// Conv2d has no groups (a depthwise [C,1,3,3] filter is rejected) and its 1×1 convolution is
// about 6× slower than the gemm.go kernel (gonum Sgemm plus an element-wise transpose), there is
// no Clip, and GlobalAveragePool2D has no gradient. So every node runs its kernel (ops*.go)
// through nodeOp, and the gradient of each of its inputs is one gradOp calling the kernel's
// backward: gorgonia differentiates the graph symbolically (SymDiff) and schedules these Ops
// like its own.
//
// Each Op owns its output buffers (recycled between runs by its arena): gorgonia's tape machine
// may offer an Op a reused buffer of another node's shape, and a fresh allocation per run costs
// page faults (about 150 MB per MobileNetV2 tail step).
//
// Shapes are static per built graph (the batch size is part of them). A rank-0 tensor is a
// [1] tensor in gorgonia; the Op restores its ONNX shape.

var opIDs atomic.Uint64

// slot is one kernel input: the gorgonia child it reads (child >= 0), or a constant (c), or
// absent (child < 0 and c nil: an omitted optional input).
type slot[T float] struct {
	child int
	c     *tensor[T]
}

// nodeOp runs one decoded node's kernel forward.
type nodeOp[T float] struct {
	id       uint64
	node, op string
	k        kernel[T]
	slots    []slot[T]
	inShapes [][]int // per slot (nil for an absent input)
	outShape []int
	children []int // the slot of each gorgonia child
	dt       gt.Dtype
	arena    arena[T]
	last     *tensor[T]
}

// gshape is the gorgonia shape of a tensor of shape s.
func gshape(s []int) gt.Shape {
	if len(s) == 0 {
		return gt.Shape{1}
	}
	return append(gt.Shape(nil), s...)
}

func tensorType(dt gt.Dtype, s []int) hm.Type {
	return gg.TensorType{Dims: len(gshape(s)), Of: dt}
}

func wrap[T float](t *tensor[T]) *gt.Dense {
	return gt.New(gt.WithShape(gshape(t.shape)...), gt.WithBacking(t.data))
}

// inputs returns the kernel's input tensors for the values of its gorgonia children.
func (o *nodeOp[T]) inputs(vs []gg.Value) ([]*tensor[T], error) {
	ins := make([]*tensor[T], len(o.slots))
	for i, s := range o.slots {
		switch {
		case s.child >= 0:
			d, ok := dataOf[T](vs[s.child])
			if !ok || len(d) != numel(o.inShapes[i]) {
				return nil, fmt.Errorf("input %d: got %v of %d values, want %v of shape %s", i, vs[s.child].Dtype(), len(d), o.dt, shapeString(o.inShapes[i]))
			}
			ins[i] = &tensor[T]{shape: o.inShapes[i], data: d}
		case s.c != nil:
			ins[i] = s.c
		}
	}
	return ins, nil
}

func (o *nodeOp[T]) Arity() int { return len(o.children) }

func (o *nodeOp[T]) Type() hm.Type {
	ts := make([]hm.Type, 0, len(o.children)+1)
	for _, s := range o.children {
		ts = append(ts, tensorType(o.dt, o.inShapes[s]))
	}
	return hm.NewFnType(append(ts, tensorType(o.dt, o.outShape))...)
}

func (o *nodeOp[T]) InferShape(...gg.DimSizer) (gt.Shape, error) { return gshape(o.outShape), nil }

func (o *nodeOp[T]) Do(vs ...gg.Value) (gg.Value, error) {
	ins, err := o.inputs(vs)
	if err != nil {
		return nil, &NodeError{Node: o.node, Op: o.op, Err: err}
	}
	o.arena.put(o.last) // the previous run's output is dead once the node runs again
	y, err := o.k.forward(&o.arena, ins)
	if err != nil {
		o.last = nil
		return nil, &NodeError{Node: o.node, Op: o.op, Err: fmt.Errorf("forward with inputs %s: %w", shapesOfNonNil(ins), err)}
	}
	o.last = y
	return wrap(y), nil
}

func (o *nodeOp[T]) ReturnsPtr() bool     { return false }
func (o *nodeOp[T]) CallsExtern() bool    { return false }
func (o *nodeOp[T]) OverwritesInput() int { return -1 }
func (o *nodeOp[T]) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "graph.%s(%s)#%d", o.op, o.node, o.id)
}
func (o *nodeOp[T]) Hashcode() uint32 { return hashOf(o) }
func (o *nodeOp[T]) String() string   { return o.op + "(" + o.node + ")" }

// DiffWRT: every child is a float activation or parameter (constants live in the Op).
func (o *nodeOp[T]) DiffWRT(n int) []bool {
	d := make([]bool, n)
	for i := range d {
		d[i] = true
	}
	return d
}

// SymDiff returns, for each child, a gradOp node computing dLoss/dChild from the children, the
// output and its gradient.
func (o *nodeOp[T]) SymDiff(inputs gg.Nodes, output, grad *gg.Node) (gg.Nodes, error) {
	args := append(append(gg.Nodes(nil), inputs...), output, grad)
	r := make(gg.Nodes, len(inputs))
	for i := range inputs {
		n, err := gg.ApplyOp(&gradOp[T]{id: opIDs.Add(1), f: o, child: i}, args...)
		if err != nil {
			return nil, &NodeError{Node: o.node, Op: o.op, Err: fmt.Errorf("gradient of input %d: %w", o.children[i], err)}
		}
		r[i] = n
	}
	return r, nil
}

// gradOp computes the gradient of one child of a nodeOp with the kernel's backward.
type gradOp[T float] struct {
	id    uint64
	f     *nodeOp[T]
	child int
	arena arena[T]
	last  *tensor[T]
}

func (o *gradOp[T]) Arity() int { return len(o.f.children) + 2 }

func (o *gradOp[T]) Type() hm.Type {
	f := o.f
	ts := make([]hm.Type, 0, len(f.children)+3)
	for _, s := range f.children {
		ts = append(ts, tensorType(f.dt, f.inShapes[s]))
	}
	out := tensorType(f.dt, f.outShape)
	return hm.NewFnType(append(ts, out, out, tensorType(f.dt, f.inShapes[f.children[o.child]]))...)
}

func (o *gradOp[T]) InferShape(...gg.DimSizer) (gt.Shape, error) {
	return gshape(o.f.inShapes[o.f.children[o.child]]), nil
}

func (o *gradOp[T]) Do(vs ...gg.Value) (gg.Value, error) {
	f := o.f
	nc := len(f.children)
	ins, err := f.inputs(vs[:nc])
	if err != nil {
		return nil, &NodeError{Node: f.node, Op: f.op, Err: fmt.Errorf("backward: %w", err)}
	}
	n := numel(f.outShape)
	y, okY := dataOf[T](vs[nc])
	g, okG := dataOf[T](vs[nc+1])
	if !okY || !okG || len(y) != n || len(g) != n {
		return nil, &NodeError{Node: f.node, Op: f.op, Err: fmt.Errorf("backward: output or gradient is not %d %v values", n, f.dt)}
	}
	s := f.children[o.child]
	o.arena.put(o.last)
	gin := make([]*tensor[T], len(f.slots))
	if w, ok := f.k.(gradWriter[T]); ok && w.writesGrad(ins, s) {
		gin[s] = o.arena.uninit(f.inShapes[s])
	} else {
		gin[s] = o.arena.tensor(f.inShapes[s])
	}
	o.last = gin[s]
	if err := f.k.backward(&o.arena, ins, &tensor[T]{shape: f.outShape, data: y}, &tensor[T]{shape: f.outShape, data: g}, gin); err != nil {
		return nil, &NodeError{Node: f.node, Op: f.op, Err: fmt.Errorf("backward: %w", err)}
	}
	return wrap(gin[s]), nil
}

func (o *gradOp[T]) ReturnsPtr() bool     { return false }
func (o *gradOp[T]) CallsExtern() bool    { return false }
func (o *gradOp[T]) OverwritesInput() int { return -1 }
func (o *gradOp[T]) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "graph.d%s(%s)/d%d#%d", o.f.op, o.f.node, o.child, o.id)
}
func (o *gradOp[T]) Hashcode() uint32 { return hashOf(o) }
func (o *gradOp[T]) String() string   { return fmt.Sprintf("d%s/d%d", o.f, o.child) }

func hashOf(o interface{ WriteHash(hash.Hash) }) uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}

var (
	_ gg.SDOp = (*nodeOp[float32])(nil)
	_ gg.Op   = (*gradOp[float32])(nil)
)

func shapesOfNonNil[T float](ts []*tensor[T]) string {
	var s [][]int
	for _, t := range ts {
		if t != nil {
			s = append(s, t.shape)
		}
	}
	return joinShapes(s)
}

// dataOf returns v's values as []T (gorgonia's Data panics on an empty tensor).
func dataOf[T float](v gg.Value) ([]T, bool) {
	if v.Shape().TotalSize() == 0 {
		return nil, v.Dtype() == dtypeOf[T]()
	}
	d, ok := v.Data().([]T)
	return d, ok
}
