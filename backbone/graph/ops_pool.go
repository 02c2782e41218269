package graph

import (
	"fmt"

	"github.com/grouploss/pipeline/internal/parallel"
)

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
	var am []int32
	if k.isMax {
		k.argmax = make([]int32, len(y.data))
		am = k.argmax
	}
	// The planes (sample, channel) are independent.
	parallel.Range(n*c, n*c*ohw*g.kh*g.kw, func(p0, p1 int) {
		for p := p0; p < p1; p++ {
			var amp []int32
			if am != nil {
				amp = am[p*ohw : (p+1)*ohw]
			}
			k.plane(g, x.data[p*hw:(p+1)*hw], y.data[p*ohw:(p+1)*ohw], amp)
		}
	})
	return y, nil
}

// plane pools one input plane xs into ys (and, for MaxPool, the index in xs of each output's
// maximum into am).
func (k *poolK[T]) plane(g geom, xs, ys []T, am []int32) {
	for oh := 0; oh < g.oh; oh++ {
		for ow := 0; ow < g.ow; ow++ {
			oi := oh*g.ow + ow
			var best T
			bi := int32(-1)
			var sum T
			for ki := 0; ki < g.kh; ki++ {
				ih := oh*g.sh - g.pt + ki*g.dh
				for kj := 0; kj < g.kw; kj++ {
					iw := ow*g.sw - g.pl + kj*g.dw
					if ih < 0 || ih >= g.h || iw < 0 || iw >= g.w {
						continue
					}
					v := xs[ih*g.w+iw]
					sum += v
					if bi < 0 || v > best {
						best, bi = v, int32(ih*g.w+iw)
					}
				}
			}
			if k.isMax {
				ys[oi] = best
				am[oi] = bi
				continue
			}
			switch cnt, padCnt := windowCounts(g, oh, ow); {
			case k.includePad && padCnt > 0:
				ys[oi] = sum / T(padCnt)
			case cnt > 0:
				ys[oi] = sum / T(cnt)
			}
		}
	}
}

func (k *poolK[T]) backward(a *arena[T], in []*tensor[T], out, gy *tensor[T], gin []*tensor[T]) error {
	x := in[0]
	g, err := k.resolve(x.shape[2:], k.kernel)
	if err != nil {
		return err
	}
	n, c := x.shape[0], x.shape[1]
	hw, ohw := g.h*g.w, g.oh*g.ow
	parallel.Range(n*c, n*c*ohw*g.kh*g.kw, func(p0, p1 int) {
		for p := p0; p < p1; p++ {
			var amp []int32
			if k.isMax {
				amp = k.argmax[p*ohw : (p+1)*ohw]
			}
			k.planeGrad(g, gy.data[p*ohw:(p+1)*ohw], amp, gin[0].data[p*hw:(p+1)*hw])
		}
	})
	return nil
}

// planeGrad adds to dx the gradient of one plane for its output gradient gys (am: MaxPool's
// indices from plane).
func (k *poolK[T]) planeGrad(g geom, gys []T, am []int32, dx []T) {
	for oh := 0; oh < g.oh; oh++ {
		for ow := 0; ow < g.ow; ow++ {
			oi := oh*g.ow + ow
			gv := gys[oi]
			if k.isMax {
				if bi := am[oi]; bi >= 0 {
					dx[bi] += gv
				}
				continue
			}
			cnt, padCnt := windowCounts(g, oh, ow)
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

// windowCounts returns how many taps of output (oh, ow)'s window fall inside the input (cnt)
// and inside the padded input (padCnt): AveragePool's divisors without and with
// count_include_pad.
func windowCounts(g geom, oh, ow int) (cnt, padCnt int) {
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
	return cnt, padCnt
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
	parallel.Range(len(y.data), len(x.data), func(p0, p1 int) { // over planes
		for p := p0; p < p1; p++ {
			var s T
			for _, v := range x.data[p*sp : (p+1)*sp] {
				s += v
			}
			y.data[p] = s / T(sp)
		}
	})
	return y, nil
}

func (gapK[T]) backward(a *arena[T], in []*tensor[T], out, g *tensor[T], gin []*tensor[T]) error {
	sp := numel(in[0].shape[2:])
	parallel.Range(len(g.data), len(in[0].data), func(p0, p1 int) { // over planes
		for p := p0; p < p1; p++ {
			share := g.data[p] / T(sp)
			dx := gin[0].data[p*sp : (p+1)*sp]
			for j := range dx {
				dx[j] = share
			}
		}
	})
	return nil
}

func (gapK[T]) writesGrad([]*tensor[T], int) bool { return true }
