package graph

import "fmt"

// ---- Gemm: y = alpha·op(A)·op(B) + beta·C ----

type gemmK[T float] struct {
	alpha, beta    float64
	transA, transB bool
}

func (k *gemmK[T]) views(in []*tensor[T]) (av, bv view[T], m, kk, n int, err error) {
	A, B := in[0], in[1]
	if len(A.shape) != 2 || len(B.shape) != 2 {
		return av, bv, 0, 0, 0, fmt.Errorf("inputs A %s and B %s must be 2-D", shapeString(A.shape), shapeString(B.shape))
	}
	av = dense(A.data, 0, A.shape[0], A.shape[1], A.shape[1])
	if k.transA {
		av = av.t()
	}
	bv = dense(B.data, 0, B.shape[0], B.shape[1], B.shape[1])
	if k.transB {
		bv = bv.t()
	}
	m, kk, n = len(av.ro), len(av.co), len(bv.co)
	if len(bv.ro) != kk {
		return av, bv, 0, 0, 0, fmt.Errorf("inner dimensions differ: A %s, B %s (transA %v, transB %v)", shapeString(A.shape), shapeString(B.shape), k.transA, k.transB)
	}
	return av, bv, m, kk, n, nil
}

// shape returns the output shape [m, n] after checking A, B and C (the data is not read).
func (k *gemmK[T]) shape(in []*tensor[T]) ([]int, error) {
	_, _, m, _, n, err := k.views(in)
	if err != nil {
		return nil, err
	}
	if len(in) > 2 && in[2] != nil && k.beta != 0 {
		C := in[2]
		shape, err := broadcastShapes(C.shape, []int{m, n})
		if err != nil || !sameShape(shape, []int{m, n}) {
			return nil, fmt.Errorf("C %s does not broadcast to the output [%d %d]", shapeString(C.shape), m, n)
		}
	}
	return []int{m, n}, nil
}

func (k *gemmK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	if _, err := k.shape(in); err != nil {
		return nil, err
	}
	av, bv, m, _, n, _ := k.views(in)
	y := a.tensor([]int{m, n})
	if len(in) > 2 && in[2] != nil && k.beta != 0 {
		C := in[2]
		beta := T(k.beta)
		bcastRuns(y.shape, bstrides(C.shape, y.shape), bstrides(C.shape, y.shape), func(o, co, _, cnt, cs, _ int) {
			for i := 0; i < cnt; i++ {
				y.data[o+i] = beta * C.data[co+i*cs]
			}
		})
	}
	gemm(T(k.alpha), av, bv, 1, dense(y.data, 0, m, n, n))
	return y, nil
}

func (k *gemmK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	av, bv, m, _, n, err := k.views(in)
	if err != nil {
		return err
	}
	gv := dense(g.data, 0, m, n, n)
	alpha := T(k.alpha)
	if gin[0] != nil { // d op(A) = alpha·g·op(B)ᵀ
		da := dense(gin[0].data, 0, in[0].shape[0], in[0].shape[1], in[0].shape[1])
		if k.transA {
			da = da.t()
		}
		gemm(alpha, gv, bv.t(), 1, da)
	}
	if gin[1] != nil { // d op(B) = alpha·op(A)ᵀ·g
		db := dense(gin[1].data, 0, in[1].shape[0], in[1].shape[1], in[1].shape[1])
		if k.transB {
			db = db.t()
		}
		gemm(alpha, av.t(), gv, 1, db)
	}
	if len(gin) > 2 && gin[2] != nil && k.beta != 0 {
		sg := a.tensor(g.shape)
		for i, v := range g.data {
			sg.data[i] = T(k.beta) * v
		}
		reduceTo(gin[2], sg)
		a.put(sg)
	}
	return nil
}

// ---- MatMul (numpy semantics: 1-D promotion, broadcast batch axes) ----

type matmulK[T float] struct{}

type mmGeom struct {
	m, k, n          int
	batch            []int // broadcast batch shape
	sa, sb           []int // batch strides of A and B (0 on broadcast axes), in matrices
	outShape         []int
	aMat, bMat, yMat int // elements per matrix
}

func mmGeometry(as, bs []int) (*mmGeom, error) {
	if len(as) == 0 || len(bs) == 0 {
		return nil, fmt.Errorf("inputs %s and %s must have at least one axis", shapeString(as), shapeString(bs))
	}
	a, b := as, bs
	if len(a) == 1 {
		a = []int{1, a[0]}
	}
	if len(b) == 1 {
		b = []int{b[0], 1}
	}
	g := &mmGeom{m: a[len(a)-2], k: a[len(a)-1], n: b[len(b)-1]}
	if b[len(b)-2] != g.k {
		return nil, fmt.Errorf("inner dimensions differ: %s and %s", shapeString(as), shapeString(bs))
	}
	ab, bb := a[:len(a)-2], b[:len(b)-2]
	batch, err := broadcastShapes(ab, bb)
	if err != nil {
		return nil, fmt.Errorf("batch axes of %s and %s do not broadcast", shapeString(as), shapeString(bs))
	}
	g.batch = batch
	g.sa = bstrides(ab, batch)
	g.sb = bstrides(bb, batch)
	g.aMat, g.bMat, g.yMat = g.m*g.k, g.k*g.n, g.m*g.n
	g.outShape = append([]int(nil), batch...)
	if len(as) > 1 {
		g.outShape = append(g.outShape, g.m)
	}
	if len(bs) > 1 {
		g.outShape = append(g.outShape, g.n)
	}
	return g, nil
}

// each calls f(y, a, b) with the matrix offsets of every batch element.
func (g *mmGeom) each(f func(yo, ao, bo int)) {
	nb := numel(g.batch)
	idx := make([]int, len(g.batch))
	for i := 0; i < nb; i++ {
		ao, bo := 0, 0
		for ax, v := range idx {
			ao += v * g.sa[ax]
			bo += v * g.sb[ax]
		}
		f(i*g.yMat, ao*g.aMat, bo*g.bMat)
		for ax := len(idx) - 1; ax >= 0; ax-- {
			idx[ax]++
			if idx[ax] < g.batch[ax] {
				break
			}
			idx[ax] = 0
		}
	}
}

func (matmulK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	g, err := mmGeometry(in[0].shape, in[1].shape)
	if err != nil {
		return nil, err
	}
	y := a.tensor(g.outShape)
	g.each(func(yo, ao, bo int) {
		gemm(1, dense(in[0].data, ao, g.m, g.k, g.k), dense(in[1].data, bo, g.k, g.n, g.n), 0, dense(y.data, yo, g.m, g.n, g.n))
	})
	return y, nil
}

func (matmulK[T]) backward(a *arena[T], in []*tensor[T], out, gr *tensor[T], gin []*tensor[T]) error {
	g, err := mmGeometry(in[0].shape, in[1].shape)
	if err != nil {
		return err
	}
	g.each(func(yo, ao, bo int) {
		gv := dense(gr.data, yo, g.m, g.n, g.n)
		if gin[0] != nil { // dA += g·Bᵀ
			gemm(1, gv, dense(in[1].data, bo, g.k, g.n, g.n).t(), 1, dense(gin[0].data, ao, g.m, g.k, g.k))
		}
		if gin[1] != nil { // dB += Aᵀ·g
			gemm(1, dense(in[0].data, ao, g.m, g.k, g.k).t(), gv, 1, dense(gin[1].data, bo, g.k, g.n, g.n))
		}
	})
	return nil
}
