package data

import "image"

// libjpeg's YCbCr->RGB tables (jdcolor.c, SCALEBITS 16), so colours match PIL/libjpeg-turbo exactly
// for the same YCbCr samples.
var (
	crR, cbB [256]int32
	crG, cbG [256]int32
)

func init() {
	const scaleBits = 16
	const half = 1 << (scaleBits - 1)
	fix := func(x float64) int32 { return int32(x*(1<<scaleBits) + 0.5) }
	for i := range 256 {
		x := int32(i - 128)
		crR[i] = (fix(1.40200)*x + half) >> scaleBits
		cbB[i] = (fix(1.77200)*x + half) >> scaleBits
		crG[i] = -fix(0.71414) * x
		cbG[i] = -fix(0.34414)*x + half
	}
}

func clamp8(v int32) uint8 {
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// ycbcrFancy converts a decoded 4:4:4, 4:2:2 or 4:2:0 JPEG image to packed RGB the way libjpeg(-turbo)
// does by default (PIL's decoder): chroma upsampled with the "fancy" triangle filter (3/4, 1/4 weights,
// edges replicated) and converted with libjpeg's fixed-point tables. It reports false for other
// layouts, which the caller converts with the generic path.
func ycbcrFancy(m *image.YCbCr, out []uint8) bool {
	b := m.Rect
	if b.Min != (image.Point{}) {
		return false
	}
	w, h := b.Dx(), b.Dy()
	var hs, vs int // chroma subsampling factors
	switch m.SubsampleRatio {
	case image.YCbCrSubsampleRatio444:
		hs, vs = 1, 1
	case image.YCbCrSubsampleRatio422:
		hs, vs = 2, 1
	case image.YCbCrSubsampleRatio420:
		hs, vs = 2, 2
	default:
		return false
	}
	cw, ch := (w+hs-1)/hs, (h+vs-1)/vs
	// One upsampled chroma row per plane; for 4:2:0 the vertical blend is done first on
	// "column sums" (3*nearest + next-nearest row), as libjpeg does.
	cbRow := make([]uint8, w)
	crRow := make([]uint8, w)
	cbSum := make([]int32, cw)
	crSum := make([]int32, cw)
	for y := range h {
		cy := y / vs
		cbNear := m.Cb[cy*m.CStride : cy*m.CStride+cw]
		crNear := m.Cr[cy*m.CStride : cy*m.CStride+cw]
		switch {
		case hs == 1:
			copy(cbRow, cbNear)
			copy(crRow, crNear)
		case vs == 1: // h2v1
			upsampleH2V1(cbRow, cbNear)
			upsampleH2V1(crRow, crNear)
		default: // h2v2
			oy := cy - 1 // upper output row of the pair: next nearest is the row above
			if y%2 == 1 {
				oy = cy + 1
			}
			oy = min(max(oy, 0), ch-1)
			cbFar := m.Cb[oy*m.CStride : oy*m.CStride+cw]
			crFar := m.Cr[oy*m.CStride : oy*m.CStride+cw]
			for i := range cw {
				cbSum[i] = 3*int32(cbNear[i]) + int32(cbFar[i])
				crSum[i] = 3*int32(crNear[i]) + int32(crFar[i])
			}
			upsampleH2V2(cbRow, cbSum)
			upsampleH2V2(crRow, crSum)
		}
		yRow := m.Y[y*m.YStride : y*m.YStride+w]
		o := out[y*w*3 : (y+1)*w*3]
		for x, yv := range yRow {
			yy := int32(yv)
			cb, cr := cbRow[x], crRow[x]
			o[3*x] = clamp8(yy + crR[cr])
			o[3*x+1] = clamp8(yy + (cbG[cb]+crG[cr])>>16)
			o[3*x+2] = clamp8(yy + cbB[cb])
		}
	}
	return true
}

// upsampleH2V1 doubles a chroma row: libjpeg's h2v1_fancy_upsample, cut to len(dst).
func upsampleH2V1(dst []uint8, src []uint8) {
	n := len(src)
	for i := range n {
		this := int32(src[i])
		last, next := this, this
		if i > 0 {
			last = int32(src[i-1])
		}
		if i < n-1 {
			next = int32(src[i+1])
		}
		even, odd := (this*3+last+1)>>2, (this*3+next+2)>>2
		if i == 0 {
			even = this
		}
		if i == n-1 {
			odd = this
		}
		if 2*i < len(dst) {
			dst[2*i] = uint8(even)
		}
		if 2*i+1 < len(dst) {
			dst[2*i+1] = uint8(odd)
		}
	}
}

// upsampleH2V2 doubles a row of vertical column sums (3*near + far): libjpeg's h2v2_fancy_upsample,
// cut to len(dst).
func upsampleH2V2(dst []uint8, sum []int32) {
	n := len(sum)
	for i := range n {
		this := sum[i]
		last, next := this, this
		if i > 0 {
			last = sum[i-1]
		}
		if i < n-1 {
			next = sum[i+1]
		}
		even, odd := (this*3+last+8)>>4, (this*3+next+7)>>4
		if 2*i < len(dst) {
			dst[2*i] = uint8(even)
		}
		if 2*i+1 < len(dst) {
			dst[2*i+1] = uint8(odd)
		}
	}
}
