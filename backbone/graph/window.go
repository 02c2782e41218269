package graph

import "fmt"

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
