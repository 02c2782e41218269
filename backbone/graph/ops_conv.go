package graph

import (
	"fmt"

	"github.com/grouploss/pipeline/internal/parallel"
)

// ---- Conv ----

type convK[T float] struct {
	window
	group int
}

func (k *convK[T]) geometry(in []*tensor[T]) (g geom, n, c, m, cg, mg int, err error) {
	x, w := in[0], in[1]
	if len(x.shape) < 3 {
		return g, 0, 0, 0, 0, 0, fmt.Errorf("input %s must be [N, C, spatial...]", shapeString(x.shape))
	}
	if len(w.shape) != len(x.shape) {
		return g, 0, 0, 0, 0, 0, fmt.Errorf("weight %s and input %s have different ranks", shapeString(w.shape), shapeString(x.shape))
	}
	n, c, m, cg = x.shape[0], x.shape[1], w.shape[0], w.shape[1]
	if k.group < 1 || c != cg*k.group || m%k.group != 0 {
		return g, 0, 0, 0, 0, 0, fmt.Errorf("input %s, weight %s and group %d do not match", shapeString(x.shape), shapeString(w.shape), k.group)
	}
	if k.kernel != nil && !sameShape(k.kernel, w.shape[2:]) {
		return g, 0, 0, 0, 0, 0, fmt.Errorf("kernel_shape %v differs from weight %s", k.kernel, shapeString(w.shape))
	}
	if len(in) > 2 && in[2] != nil && (len(in[2].shape) != 1 || in[2].shape[0] != m) {
		return g, 0, 0, 0, 0, 0, fmt.Errorf("bias %s must be [%d]", shapeString(in[2].shape), m)
	}
	g, err = k.resolve(x.shape[2:], w.shape[2:])
	return g, n, c, m, cg, m / k.group, err
}

func (k *convK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	g, n, c, m, cg, mg, err := k.geometry(in)
	if err != nil {
		return nil, err
	}
	x, w := in[0], in[1]
	y := a.uninit(g.outShape(n, m, len(x.shape)-2)) // every path sets each element
	ohw := g.oh * g.ow
	switch {
	case k.depthwise(c, cg):
		depthwise(x.data, w.data, y.data, g, n, c, mg)
	case pointwise(g):
		hw := g.h * g.w
		for gr := 0; gr < k.group; gr++ {
			wv := dense(w.data, gr*mg*cg, mg, cg, cg)
			xv := view[T]{d: x.data, ro: seq(cg, hw), co: panelBatched(n, c*hw, hw, 1)}
			xv.ro = shift(xv.ro, gr*cg*hw)
			yv := view[T]{d: y.data, ro: shift(seq(mg, hw), gr*mg*hw), co: panelBatched(n, m*hw, hw, 1)}
			gemmORT(1, wv, xv, 0, yv)
		}
	default:
		kk := cg * g.kh * g.kw
		k.im2colChunks(g, n, c, cg, func(gr, n0, nb int, col []T) {
			cv := dense(col, 0, kk, nb*ohw, nb*ohw)
			yv := view[T]{d: y.data, ro: shift(seq(mg, ohw), gr*mg*ohw+n0*m*ohw), co: batched(nb, m*ohw, ohw, 1)}
			gemmORT(1, dense(w.data, gr*mg*kk, mg, kk, kk), cv, 0, yv)
		}, x.data, nil)
	}
	// The bias is added to the finished sums, as onnxruntime's kernels do (the same rounding).
	if len(in) > 2 && in[2] != nil {
		b := in[2].data[:m]
		parallel.Range(n*m, n*m*ohw, func(p0, p1 int) { // over planes (sample, channel)
			for p := p0; p < p1; p++ {
				bv := b[p%m]
				row := y.data[p*ohw : (p+1)*ohw]
				for j := range row {
					row[j] += bv
				}
			}
		})
	}
	return y, nil
}

// im2colChunks lays out, for each group and chunk of samples, the matrix col (cg·kh·kw rows ×
// nb·oh·ow columns) of input values under each kernel tap, and calls f with it. With grad
// non-nil it works in reverse: f fills col with gradients, which are then added back (col2im)
// into grad.
func (k *convK[T]) im2colChunks(g geom, n, c, cg int, f func(gr, n0, nb int, col []T), x, grad []T) {
	kk := cg * g.kh * g.kw
	ohw := g.oh * g.ow
	hw := g.h * g.w
	chunk := max(1, min(n, (1<<22)/max(1, kk*ohw)))
	colBuf := getScratch[T](kk * chunk * ohw)
	defer putScratch(colBuf)
	col := *colBuf
	for gr := 0; gr < k.group; gr++ {
		for n0 := 0; n0 < n; n0 += chunk {
			nb := min(chunk, n-n0)
			cols := nb * ohw
			col := col[:kk*cols]
			if grad != nil {
				clear(col)
			}
			if grad == nil {
				for r := 0; r < kk; r++ {
					ci, rem := r/(g.kh*g.kw), r%(g.kh*g.kw)
					ki, kj := rem/g.kw, rem%g.kw
					for s := 0; s < nb; s++ {
						src := x[((n0+s)*c+gr*cg+ci)*hw:]
						dst := col[r*cols+s*ohw : r*cols+(s+1)*ohw]
						for oh := 0; oh < g.oh; oh++ {
							ih := oh*g.sh - g.pt + ki*g.dh
							drow := dst[oh*g.ow : (oh+1)*g.ow]
							if ih < 0 || ih >= g.h {
								clear(drow)
								continue
							}
							for ow := range drow {
								iw := ow*g.sw - g.pl + kj*g.dw
								if iw < 0 || iw >= g.w {
									drow[ow] = 0
								} else {
									drow[ow] = src[ih*g.w+iw]
								}
							}
						}
					}
				}
			}
			f(gr, n0, nb, col)
			if grad != nil {
				for r := 0; r < kk; r++ {
					ci, rem := r/(g.kh*g.kw), r%(g.kh*g.kw)
					ki, kj := rem/g.kw, rem%g.kw
					for s := 0; s < nb; s++ {
						dst := grad[((n0+s)*c+gr*cg+ci)*hw:]
						src := col[r*cols+s*ohw : r*cols+(s+1)*ohw]
						for oh := 0; oh < g.oh; oh++ {
							ih := oh*g.sh - g.pt + ki*g.dh
							if ih < 0 || ih >= g.h {
								continue
							}
							for ow := 0; ow < g.ow; ow++ {
								iw := ow*g.sw - g.pl + kj*g.dw
								if iw >= 0 && iw < g.w {
									dst[ih*g.w+iw] += src[oh*g.ow+ow]
								}
							}
						}
					}
				}
			}
		}
	}
}

func (k *convK[T]) backward(a *arena[T], in []*tensor[T], out, gy *tensor[T], gin []*tensor[T]) error {
	g, n, c, m, cg, mg, err := k.geometry(in)
	if err != nil {
		return err
	}
	x, w := in[0], in[1]
	ohw := g.oh * g.ow
	if len(gin) > 2 && gin[2] != nil {
		// Split over channels; each channel adds its samples' sums in sample order.
		db := gin[2].data[:m]
		parallel.Range(m, n*m*ohw, func(o0, o1 int) {
			for i := 0; i < n; i++ {
				for o := o0; o < o1; o++ {
					var s T
					for _, v := range gy.data[(i*m+o)*ohw : (i*m+o+1)*ohw] {
						s += v
					}
					db[o] += s
				}
			}
		})
	}
	var dx, dw []T
	if gin[0] != nil {
		dx = gin[0].data
	}
	if gin[1] != nil {
		dw = gin[1].data
	}
	switch {
	case k.depthwise(c, cg):
		if dx != nil {
			depthwiseBackX(dx, w.data, gy.data, g, n, c, mg)
		}
		if dw != nil {
			depthwiseBackW(x.data, dw, gy.data, g, n, c, mg)
		}
	case pointwise(g):
		// Each group's product sets its own rows of dx and dw once (see writesGrad).
		hw := g.h * g.w
		for gr := 0; gr < k.group; gr++ {
			xco := batched(n, c*hw, hw, 1)
			gv := view[T]{d: gy.data, ro: shift(seq(mg, hw), gr*mg*hw), co: batched(n, m*hw, hw, 1)}
			if dx != nil { // dXg = Wgᵀ·dYg, columns in panel order (dW's sums keep batched's)
				wv := dense(w.data, gr*mg*cg, mg, cg, cg)
				gp := view[T]{d: gy.data, ro: gv.ro, co: panelBatched(n, m*hw, hw, 1)}
				gemm(1, wv.t(), gp, 0, view[T]{d: dx, ro: shift(seq(cg, hw), gr*cg*hw), co: panelBatched(n, c*hw, hw, 1)})
			}
			if dw != nil { // dWg = dYg·Xgᵀ
				xv := view[T]{d: x.data, ro: shift(seq(cg, hw), gr*cg*hw), co: xco}
				gemm(1, gv, xv.t(), 0, dense(dw, gr*mg*cg, mg, cg, cg))
			}
		}
	default:
		kk := cg * g.kh * g.kw
		yview := func(gr, n0, nb int) view[T] {
			return view[T]{d: gy.data, ro: shift(seq(mg, ohw), gr*mg*ohw+n0*m*ohw), co: batched(nb, m*ohw, ohw, 1)}
		}
		if dw != nil {
			k.im2colChunks(g, n, c, cg, func(gr, n0, nb int, col []T) {
				cv := dense(col, 0, kk, nb*ohw, nb*ohw)
				gemm(1, yview(gr, n0, nb), cv.t(), 1, dense(dw, gr*mg*kk, mg, kk, kk))
			}, x.data, nil)
		}
		if dx != nil {
			k.im2colChunks(g, n, c, cg, func(gr, n0, nb int, col []T) {
				cv := dense(col, 0, kk, nb*ohw, nb*ohw)
				gemm(1, dense(w.data, gr*mg*kk, mg, kk, kk).t(), yview(gr, n0, nb), 0, cv)
			}, nil, dx)
		}
	}
	return nil
}

// depthwise reports whether the convolution is depthwise (one input channel per group).
func (k *convK[T]) depthwise(c, cg int) bool { return cg == 1 && k.group == c && k.group > 1 }

// pointwise reports whether the convolution is 1x1 with stride 1 and no padding: a matrix
// product per group.
func pointwise(g geom) bool {
	return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt+g.pl+g.pb+g.pr == 0
}

// writesGrad: the pointwise backward sets dx and dw, the depthwise one dx; the others (and the
// bias) accumulate.
func (k *convK[T]) writesGrad(in []*tensor[T], i int) bool {
	g, _, c, _, cg, _, err := k.geometry(in)
	if err != nil {
		return false
	}
	if k.depthwise(c, cg) {
		return i == 0
	}
	return i < 2 && pointwise(g)
}
