package graph

import (
	"math"

	"github.com/grouploss/pipeline/backbone/graph/internal/simd"
	"github.com/grouploss/pipeline/internal/parallel"
)

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

// dwShape returns the shape of a depthwise convolution for simd's kernels, and whether they
// run it when it is float32: on CPUs with AVX2 and FMA, stride 1, kernels of at most
// simd.DepthwiseMaxTaps taps. They give the Go kernels' forward results bit for bit.
func dwShape(g geom, n, c, mult int) (simd.DepthwiseShape, bool) {
	if !simd.Supported || noSIMD || g.sh != 1 || g.sw != 1 || g.kh*g.kw > simd.DepthwiseMaxTaps {
		return simd.DepthwiseShape{}, false
	}
	return simd.DepthwiseShape{N: n, C: c, Mult: mult, H: g.h, W: g.w, OH: g.oh, OW: g.ow, KH: g.kh, KW: g.kw,
		DH: g.dh, DW: g.dw, PT: g.pt, PL: g.pl}, true
}

// depthwise sets y = conv(x, w) for group == C, one input channel per group and mult output
// channels per input channel (channel o reads input channel o/mult), in parallel over output
// channels.
func depthwise[T float](x, w, y []T, g geom, n, c, mult int) {
	m := c * mult
	hw, ohw, kk := g.h*g.w, g.oh*g.ow, g.kh*g.kw
	if s, ok := dwShape(g, n, c, mult); ok {
		if x32, ok := any(x).([]float32); ok {
			w32, y32 := any(w).([]float32), any(y).([]float32)
			parallel.Range(m, n*m*ohw*kk, func(lo, hi int) { simd.Depthwise(x32, w32, y32, &s, lo, hi) })
			return
		}
	}
	runs := tapRuns(g)
	parallel.For(m, n*ohw*kk*8, func(o int) {
		ci := o / mult
		wk := w[o*kk : (o+1)*kk]
		for i := 0; i < n; i++ {
			xs := x[(i*c+ci)*hw : (i*c+ci+1)*hw]
			ys := y[(i*m+o)*ohw : (i*m+o+1)*ohw]
			clear(ys)
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

// depthwiseBackX sets dx to the gradient of depthwise's x for the output gradient gy, in
// parallel over input channels (each clears its planes, then adds its output channels' terms).
func depthwiseBackX[T float](dx, w, gy []T, g geom, n, c, mult int) {
	m := c * mult
	hw, ohw, kk := g.h*g.w, g.oh*g.ow, g.kh*g.kw
	if s, ok := dwShape(g, n, c, mult); ok {
		if dx32, ok := any(dx).([]float32); ok {
			w32, gy32 := any(w).([]float32), any(gy).([]float32)
			parallel.Range(c, n*m*ohw*kk, func(lo, hi int) { simd.DepthwiseBackX(dx32, w32, gy32, &s, lo, hi) })
			return
		}
	}
	runs := tapRuns(g)
	parallel.For(c, n*ohw*kk*8*mult, func(ci int) {
		for i := 0; i < n; i++ {
			clear(dx[(i*c+ci)*hw : (i*c+ci+1)*hw])
		}
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

// depthwiseBackW adds the gradient of depthwise's w for the output gradient gy to dw, in
// parallel over output channels.
func depthwiseBackW[T float](x, dw, gy []T, g geom, n, c, mult int) {
	m := c * mult
	hw, ohw, kk := g.h*g.w, g.oh*g.ow, g.kh*g.kw
	if s, ok := dwShape(g, n, c, mult); ok {
		if x32, ok := any(x).([]float32); ok {
			dw32, gy32 := any(dw).([]float32), any(gy).([]float32)
			parallel.Range(m, n*m*ohw*kk, func(lo, hi int) { simd.DepthwiseBackW(x32, dw32, gy32, &s, lo, hi) })
			return
		}
	}
	runs := tapRuns(g)
	parallel.For(m, n*ohw*kk*8, func(o int) {
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
