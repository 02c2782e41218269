package graph

import (
	"fmt"
	"math"
)

// Convolution and pooling over 1-D and 2-D spatial axes (NCL and NCHW; 1-D runs as H = 1).

const (
	padNotSet = iota
	padSameUpper
	padSameLower
	padValid
)

// window holds the static attributes shared by Conv, MaxPool and AveragePool. Slices have one
// entry per spatial axis (pads: begins then ends); nil means the ONNX default.
type window struct {
	kernel, strides, dilations, pads []int
	autoPad                          int
	ceil                             bool
}

// geom is a resolved 2-D window over an input of h×w.
type geom struct {
	h, w, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, oh, ow int
}

func pick(s []int, i, def int) int {
	if s == nil {
		return def
	}
	return s[i]
}

// resolve computes the 2-D geometry for input spatial dims sp (1 or 2 axes) and kernel dims k.
func (wd *window) resolve(sp, k []int) (geom, error) {
	nd := len(sp)
	if nd != 1 && nd != 2 {
		return geom{}, fmt.Errorf("%d spatial axes: only 1-D and 2-D are supported", nd)
	}
	if len(k) != nd {
		return geom{}, fmt.Errorf("kernel %s does not match %d spatial axes", shapeString(k), nd)
	}
	for _, s := range [][]int{wd.strides, wd.dilations} {
		if s != nil && len(s) != nd {
			return geom{}, fmt.Errorf("strides/dilations %v do not match %d spatial axes", s, nd)
		}
	}
	if wd.pads != nil && len(wd.pads) != 2*nd {
		return geom{}, fmt.Errorf("pads %v do not match %d spatial axes", wd.pads, nd)
	}
	var in, ker, st, dl, pb, pe, out [2]int
	for i := 0; i < 2; i++ {
		in[i], ker[i], st[i], dl[i], out[i] = 1, 1, 1, 1, 1
	}
	off := 2 - nd // 1-D uses the second (W) slot
	for i := 0; i < nd; i++ {
		j := off + i
		in[j], ker[j] = sp[i], k[i]
		st[j], dl[j] = pick(wd.strides, i, 1), pick(wd.dilations, i, 1)
		if st[j] < 1 || dl[j] < 1 || ker[j] < 1 {
			return geom{}, fmt.Errorf("kernel %v, strides %v and dilations %v must be positive", k, wd.strides, wd.dilations)
		}
		ek := (ker[j]-1)*dl[j] + 1
		switch wd.autoPad {
		case padSameUpper, padSameLower:
			o := (in[j] + st[j] - 1) / st[j]
			total := max(0, (o-1)*st[j]+ek-in[j])
			if wd.autoPad == padSameUpper {
				pb[j], pe[j] = total/2, total-total/2
			} else {
				pb[j], pe[j] = total-total/2, total/2
			}
		case padValid:
		default:
			pb[j], pe[j] = pick(wd.pads, i, 0), pick(wd.pads, nd+i, 0)
		}
		num := in[j] + pb[j] + pe[j] - ek
		if num < 0 {
			return geom{}, fmt.Errorf("window %d (dilated) is larger than the padded input %d", ek, in[j]+pb[j]+pe[j])
		}
		out[j] = num/st[j] + 1
		if wd.ceil {
			out[j] = (num+st[j]-1)/st[j] + 1
			if (out[j]-1)*st[j] >= in[j]+pb[j] { // the last window must start inside the input or left pad
				out[j]--
			}
		}
	}
	return geom{h: in[0], w: in[1], kh: ker[0], kw: ker[1], sh: st[0], sw: st[1], dh: dl[0], dw: dl[1],
		pt: pb[0], pl: pb[1], pb: pe[0], pr: pe[1], oh: out[0], ow: out[1]}, nil
}

// outShape returns [n, c, spatial...] with the output spatial size for nd axes.
func (g geom) outShape(n, c, nd int) []int {
	if nd == 1 {
		return []int{n, c, g.ow}
	}
	return []int{n, c, g.oh, g.ow}
}

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
	y := a.tensor(g.outShape(n, m, len(x.shape)-2))
	ohw := g.oh * g.ow
	switch {
	case k.depthwise(c, cg):
		depthwise(x.data, w.data, y.data, g, n, c, mg)
	case pointwise(g):
		hw := g.h * g.w
		for gr := 0; gr < k.group; gr++ {
			wv := dense(w.data, gr*mg*cg, mg, cg, cg)
			xv := view[T]{d: x.data, ro: seq(cg, hw), co: batched(n, c*hw, hw, 1)}
			xv.ro = shift(xv.ro, gr*cg*hw)
			yv := view[T]{d: y.data, ro: shift(seq(mg, hw), gr*mg*hw), co: batched(n, m*hw, hw, 1)}
			gemmORT(1, wv, xv, 1, yv)
		}
	default:
		kk := cg * g.kh * g.kw
		k.im2colChunks(g, n, c, cg, func(gr, n0, nb int, col []T) {
			cv := dense(col, 0, kk, nb*ohw, nb*ohw)
			yv := view[T]{d: y.data, ro: shift(seq(mg, ohw), gr*mg*ohw+n0*m*ohw), co: batched(nb, m*ohw, ohw, 1)}
			gemmORT(1, dense(w.data, gr*mg*kk, mg, kk, kk), cv, 1, yv)
		}, x.data, nil)
	}
	// The bias is added to the finished sums, as onnxruntime's kernels do (the same rounding).
	if len(in) > 2 && in[2] != nil {
		for i := 0; i < n; i++ {
			for o, bv := range in[2].data[:m] {
				row := y.data[(i*m+o)*ohw : (i*m+o+1)*ohw]
				for j := range row {
					row[j] += bv
				}
			}
		}
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
		for i := 0; i < n; i++ {
			for o := 0; o < m; o++ {
				var s T
				for _, v := range gy.data[(i*m+o)*ohw : (i*m+o+1)*ohw] {
					s += v
				}
				gin[2].data[o] += s
			}
		}
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
			if dx != nil { // dXg = Wgᵀ·dYg
				wv := dense(w.data, gr*mg*cg, mg, cg, cg)
				gemm(1, wv.t(), gv, 0, view[T]{d: dx, ro: shift(seq(cg, hw), gr*cg*hw), co: xco})
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

// writesGrad: the pointwise backward sets dx and dw; the others (and the bias) accumulate.
func (k *convK[T]) writesGrad(in []*tensor[T], i int) bool {
	g, _, c, _, cg, _, err := k.geometry(in)
	return err == nil && i < 2 && !k.depthwise(c, cg) && pointwise(g)
}

// tapRun is a run of cnt outputs from y offset yo that read x from offset xo with stride xs
// under kernel tap (ki·kw + kj).
type tapRun struct{ yo, xo, cnt, xs, tap int }

// tapRuns lists, for each output row and kernel tap, the run of outputs whose input is inside
// the (unpadded) input plane. The list is the same for every channel and sample.
func tapRuns(g geom) []tapRun {
	var runs []tapRun
	for oh := 0; oh < g.oh; oh++ {
		for ki := 0; ki < g.kh; ki++ {
			ih := oh*g.sh - g.pt + ki*g.dh
			if ih < 0 || ih >= g.h {
				continue
			}
			for kj := 0; kj < g.kw; kj++ {
				// valid ow: 0 <= ow*sw + base < w
				base := kj*g.dw - g.pl
				lo := 0
				if base < 0 {
					lo = (-base + g.sw - 1) / g.sw
				}
				hi := 0
				if lim := g.w - 1 - base; lim >= 0 {
					hi = min(g.ow, lim/g.sw+1)
				}
				if lo < hi {
					runs = append(runs, tapRun{yo: oh*g.ow + lo, xo: ih*g.w + lo*g.sw + base, cnt: hi - lo, xs: g.sw, tap: ki*g.kw + kj})
				}
			}
		}
	}
	return runs
}

// depthwise computes y += conv(x, w) for group == C, one input channel per group and mult
// output channels per input channel (channel o reads input channel o/mult), in parallel over
// output channels.
func depthwise[T float](x, w, y []T, g geom, n, c, mult int) {
	m := c * mult
	hw, ohw, kk := g.h*g.w, g.oh*g.ow, g.kh*g.kw
	runs := tapRuns(g)
	parallelFor(m, n*ohw*kk*8, func(o int) {
		ci := o / mult
		wk := w[o*kk : (o+1)*kk]
		for i := 0; i < n; i++ {
			xs := x[(i*c+ci)*hw : (i*c+ci+1)*hw]
			ys := y[(i*m+o)*ohw : (i*m+o+1)*ohw]
			for _, r := range runs {
				wv := wk[r.tap]
				yr := ys[r.yo : r.yo+r.cnt]
				if r.xs == 1 {
					xr := xs[r.xo : r.xo+r.cnt]
					for j, v := range xr {
						yr[j] = fma(wv, v, yr[j])
					}
					continue
				}
				for j := range yr {
					yr[j] = fma(wv, xs[r.xo+j*r.xs], yr[j])
				}
			}
		}
	})
}

// fma returns a·b + c rounded once (for float32, through float64: a·b is exact there, and the
// second rounding differs from a fused float32 one only in vanishingly rare ties), the
// multiply-add of onnxruntime's depthwise kernel, so that the two round alike.
func fma[T float](a, b, c T) T {
	return T(math.FMA(float64(a), float64(b), float64(c)))
}

func depthwiseBackX[T float](dx, w, gy []T, g geom, n, c, mult int) {
	m := c * mult
	hw, ohw, kk := g.h*g.w, g.oh*g.ow, g.kh*g.kw
	runs := tapRuns(g)
	parallelFor(c, n*ohw*kk*8*mult, func(ci int) {
		for o := ci * mult; o < (ci+1)*mult; o++ {
			wk := w[o*kk : (o+1)*kk]
			for i := 0; i < n; i++ {
				xs := dx[(i*c+ci)*hw : (i*c+ci+1)*hw]
				gs := gy[(i*m+o)*ohw : (i*m+o+1)*ohw]
				for _, r := range runs {
					wv := wk[r.tap]
					gr := gs[r.yo : r.yo+r.cnt]
					if r.xs == 1 {
						xr := xs[r.xo : r.xo+r.cnt]
						for j, v := range gr {
							xr[j] += wv * v
						}
						continue
					}
					for j, v := range gr {
						xs[r.xo+j*r.xs] += wv * v
					}
				}
			}
		}
	})
}

func depthwiseBackW[T float](x, dw, gy []T, g geom, n, c, mult int) {
	m := c * mult
	hw, ohw, kk := g.h*g.w, g.oh*g.ow, g.kh*g.kw
	runs := tapRuns(g)
	parallelFor(m, n*ohw*kk*8, func(o int) {
		ci := o / mult
		acc := make([]T, kk)
		for i := 0; i < n; i++ {
			xs := x[(i*c+ci)*hw : (i*c+ci+1)*hw]
			gs := gy[(i*m+o)*ohw : (i*m+o+1)*ohw]
			for _, r := range runs {
				var s T
				gr := gs[r.yo : r.yo+r.cnt]
				if r.xs == 1 {
					xr := xs[r.xo : r.xo+r.cnt]
					for j, v := range gr {
						s += v * xr[j]
					}
				} else {
					for j, v := range gr {
						s += v * xs[r.xo+j*r.xs]
					}
				}
				acc[r.tap] += s
			}
		}
		for t, v := range acc {
			dw[o*kk+t] += v
		}
	})
}

// ---- MaxPool, AveragePool, GlobalAveragePool ----

type poolK[T float] struct {
	window
	isMax      bool
	includePad bool
	argmax     []int32 // MaxPool: flat input index of each output's maximum within its plane
}

func (k *poolK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	x := in[0]
	if len(x.shape) < 3 {
		return nil, fmt.Errorf("input %s must be [N, C, spatial...]", shapeString(x.shape))
	}
	g, err := k.resolve(x.shape[2:], k.kernel)
	if err != nil {
		return nil, err
	}
	n, c := x.shape[0], x.shape[1]
	y := a.tensor(g.outShape(n, c, len(x.shape)-2))
	hw, ohw := g.h*g.w, g.oh*g.ow
	if k.isMax {
		k.argmax = make([]int32, len(y.data))
	}
	for p := 0; p < n*c; p++ {
		xs := x.data[p*hw : (p+1)*hw]
		for oh := 0; oh < g.oh; oh++ {
			for ow := 0; ow < g.ow; ow++ {
				oi := p*ohw + oh*g.ow + ow
				var best T
				bi := int32(-1)
				var sum T
				cnt, padCnt := 0, 0
				for ki := 0; ki < g.kh; ki++ {
					ih := oh*g.sh - g.pt + ki*g.dh
					for kj := 0; kj < g.kw; kj++ {
						iw := ow*g.sw - g.pl + kj*g.dw
						if ih >= -g.pt && ih < g.h+g.pb && iw >= -g.pl && iw < g.w+g.pr {
							padCnt++
						}
						if ih < 0 || ih >= g.h || iw < 0 || iw >= g.w {
							continue
						}
						v := xs[ih*g.w+iw]
						cnt++
						sum += v
						if bi < 0 || v > best {
							best, bi = v, int32(ih*g.w+iw)
						}
					}
				}
				switch {
				case k.isMax:
					y.data[oi] = best
					k.argmax[oi] = bi
				case k.includePad && padCnt > 0:
					y.data[oi] = sum / T(padCnt)
				case cnt > 0:
					y.data[oi] = sum / T(cnt)
				}
			}
		}
	}
	return y, nil
}

func (k *poolK[T]) backward(a *arena[T], in []*tensor[T], out, gy *tensor[T], gin []*tensor[T]) error {
	x := in[0]
	g, err := k.resolve(x.shape[2:], k.kernel)
	if err != nil {
		return err
	}
	n, c := x.shape[0], x.shape[1]
	hw, ohw := g.h*g.w, g.oh*g.ow
	for p := 0; p < n*c; p++ {
		dx := gin[0].data[p*hw : (p+1)*hw]
		for oh := 0; oh < g.oh; oh++ {
			for ow := 0; ow < g.ow; ow++ {
				oi := p*ohw + oh*g.ow + ow
				gv := gy.data[oi]
				if k.isMax {
					if bi := k.argmax[oi]; bi >= 0 {
						dx[bi] += gv
					}
					continue
				}
				cnt, padCnt := 0, 0
				for ki := 0; ki < g.kh; ki++ {
					ih := oh*g.sh - g.pt + ki*g.dh
					for kj := 0; kj < g.kw; kj++ {
						iw := ow*g.sw - g.pl + kj*g.dw
						if ih >= -g.pt && ih < g.h+g.pb && iw >= -g.pl && iw < g.w+g.pr {
							padCnt++
						}
						if ih >= 0 && ih < g.h && iw >= 0 && iw < g.w {
							cnt++
						}
					}
				}
				div := cnt
				if k.includePad {
					div = padCnt
				}
				if div == 0 {
					continue
				}
				share := gv / T(div)
				for ki := 0; ki < g.kh; ki++ {
					ih := oh*g.sh - g.pt + ki*g.dh
					if ih < 0 || ih >= g.h {
						continue
					}
					for kj := 0; kj < g.kw; kj++ {
						iw := ow*g.sw - g.pl + kj*g.dw
						if iw >= 0 && iw < g.w {
							dx[ih*g.w+iw] += share
						}
					}
				}
			}
		}
	}
	return nil
}

type gapK[T float] struct{}

func (gapK[T]) forward(a *arena[T], in []*tensor[T]) (*tensor[T], error) {
	x := in[0]
	if len(x.shape) < 3 {
		return nil, fmt.Errorf("input %s must be [N, C, spatial...]", shapeString(x.shape))
	}
	shape := append([]int(nil), x.shape...)
	for i := 2; i < len(shape); i++ {
		shape[i] = 1
	}
	y := a.uninit(shape)
	sp := numel(x.shape[2:])
	for p := range y.data {
		var s T
		for _, v := range x.data[p*sp : (p+1)*sp] {
			s += v
		}
		y.data[p] = s / T(sp)
	}
	return y, nil
}

func (gapK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	sp := numel(in[0].shape[2:])
	for p, gv := range g.data {
		share := gv / T(sp)
		dx := gin[0].data[p*sp : (p+1)*sp]
		for j := range dx {
			dx[j] = share
		}
	}
	return nil
}

func (gapK[T]) writesGrad([]*tensor[T], int) bool { return true }
