package data

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"os"
)

// scratch holds the reusable buffers of one decoding goroutine. Its zero value is ready to use.
type scratch struct {
	rgb    []uint8   // source pixels, packed RGB, srcW*srcH*3
	tmp    []float32 // horizontally resampled rows, packed RGB
	acc    []float32 // one vertically accumulated output row, packed RGB
	xs, ys coeffs
}

// coeffs are the bilinear (triangle filter) weights of one axis: output pixel i reads taps
// w[i*stride : i*stride+n[i]] starting at source pixel start[i].
type coeffs struct {
	in, full, off, out int // cache key: source length, resized length, crop offset, output length
	start, n           []int
	w                  []float32
	stride             int
}

// setCoeffs computes the weights of resizing an axis of in pixels to full pixels and keeping out
// pixels from offset off, as PIL's ImagingResample does for its bilinear filter: pixel centers at
// i+0.5, triangle filter of support 1 widened by the scale factor when shrinking, taps clipped to
// the image and renormalized.
func (c *coeffs) set(in, full, off, out int) {
	if c.in == in && c.full == full && c.off == off && c.out == out && c.start != nil {
		return
	}
	c.in, c.full, c.off, c.out = in, full, off, out
	scale := float64(in) / float64(full)
	filterscale := max(scale, 1)
	support := filterscale // bilinear support 1, times filterscale
	c.stride = int(math.Ceil(support))*2 + 1
	c.start = make([]int, out)
	c.n = make([]int, out)
	c.w = make([]float32, out*c.stride)
	ss := 1 / filterscale
	ws := make([]float64, c.stride)
	for i := range out {
		center := (float64(i+off) + 0.5) * scale
		xmin := max(int(center-support+0.5), 0) // int() truncates toward zero, as C does in PIL
		xmax := min(int(center+support+0.5), in)
		n := min(xmax-xmin, c.stride)
		total := 0.0
		for k := range n {
			x := (float64(k+xmin) - center + 0.5) * ss
			w := 1 - math.Abs(x)
			if w < 0 {
				w = 0
			}
			ws[k] = w
			total += w
		}
		// Drop zero-weight taps at both ends (they do not change the sums).
		lo, hi := 0, n
		for lo < hi && ws[lo] == 0 {
			lo++
		}
		for hi > lo && ws[hi-1] == 0 {
			hi--
		}
		c.start[i], c.n[i] = xmin+lo, hi-lo
		for k := lo; k < hi; k++ {
			c.w[i*c.stride+k-lo] = float32(ws[k] / total)
		}
	}
}

// file decodes path and writes its tensor into dst.
func (s *scratch) file(p Preprocess, path string, dst []float32) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return &ImageError{Path: path, Item: -1, Err: err}
	}
	img, err := decodeBytes(path, b, p.MaxPixels)
	if err != nil {
		return err
	}
	if err := s.tensor(p, img, dst); err != nil {
		return &ImageError{Path: path, Item: -1, Err: err}
	}
	return nil
}

// tensor writes the (3, H, W) tensor of img into dst; p must be valid.
func (s *scratch) tensor(p Preprocess, img image.Image, dst []float32) error {
	if len(dst) != p.Size() {
		return fmt.Errorf("data: tensor: destination holds %d floats, want 3*%d*%d = %d", len(dst), p.Height, p.Width, p.Size())
	}
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	if sw <= 0 || sh <= 0 {
		return fmt.Errorf("data: tensor: empty image %dx%d", sw, sh)
	}
	s.toRGB(img)

	// Geometry: full resized size and crop offsets.
	fw, fh, offX, offY := p.Width, p.Height, 0, 0
	if p.Resize == ResizeCenterCrop {
		// torchvision Resize(int): shorter side to S, longer side int(S * long / short).
		if sw <= sh {
			fw, fh = p.ResizeShorter, int(float64(p.ResizeShorter)*float64(sh)/float64(sw))
		} else {
			fw, fh = int(float64(p.ResizeShorter)*float64(sw)/float64(sh)), p.ResizeShorter
		}
		// torchvision CenterCrop: int(round((size - crop) / 2)), Python rounds half to even.
		offX = int(math.RoundToEven(float64(fw-p.Width) / 2))
		offY = int(math.RoundToEven(float64(fh-p.Height) / 2))
	}
	s.xs.set(sw, fw, offX, p.Width)
	s.ys.set(sh, fh, offY, p.Height)

	// Source rows touched by the vertical filter.
	y0 := s.ys.start[0]
	y1 := s.ys.start[p.Height-1] + s.ys.n[p.Height-1]
	ow := p.Width
	rowLen := ow * 3
	s.tmp = grow(s.tmp, (y1-y0)*rowLen)
	xs := &s.xs
	for y := y0; y < y1; y++ {
		src := s.rgb[y*sw*3 : (y+1)*sw*3]
		out := s.tmp[(y-y0)*rowLen : (y-y0+1)*rowLen]
		for x := range ow {
			st, n := xs.start[x], xs.n[x]
			ws := xs.w[x*xs.stride : x*xs.stride+n]
			px := src[st*3 : (st+n)*3]
			var r, g, bl float32
			if n == 2 { // the common case when the scale is near 1
				w0, w1 := ws[0], ws[1]
				px := px[:6]
				r = float32(px[0])*w0 + float32(px[3])*w1
				g = float32(px[1])*w0 + float32(px[4])*w1
				bl = float32(px[2])*w0 + float32(px[5])*w1
			} else {
				for k, w := range ws {
					r += float32(px[3*k]) * w
					g += float32(px[3*k+1]) * w
					bl += float32(px[3*k+2]) * w
				}
			}
			o := out[3*x : 3*x+3]
			o[0], o[1], o[2] = r, g, bl
		}
	}

	// Vertical pass, then normalization into channel planes.
	// Source channel c (R, G, B) goes to output channel oc[c], normalized with Mean[oc[c]], Std[oc[c]].
	oc := [3]int{0, 1, 2}
	if p.ChannelOrder == BGR {
		oc = [3]int{2, 1, 0}
	}
	var mul, add [3]float32
	var dstC [3]int
	plane := ow * p.Height
	for c := range 3 {
		mul[c] = p.Scale / p.Std[oc[c]]
		add[c] = -p.Mean[oc[c]] / p.Std[oc[c]]
		dstC[c] = oc[c] * plane
	}
	s.acc = grow(s.acc, rowLen)
	acc := s.acc
	ys := &s.ys
	for y := range p.Height {
		st, n := ys.start[y], ys.n[y]
		ws := ys.w[y*ys.stride : y*ys.stride+n]
		switch n {
		case 1:
			copy(acc, s.tmp[(st-y0)*rowLen:(st-y0+1)*rowLen])
			if w := ws[0]; w != 1 {
				for i := range acc {
					acc[i] *= w
				}
			}
		case 2: // the common case when the scale is near 1
			r0 := s.tmp[(st-y0)*rowLen : (st-y0+1)*rowLen]
			r1 := s.tmp[(st+1-y0)*rowLen : (st+2-y0)*rowLen]
			r1 = r1[:len(r0)]
			acc := acc[:len(r0)]
			w0, w1 := ws[0], ws[1]
			for i, v := range r0 {
				acc[i] = v*w0 + r1[i]*w1
			}
		default:
			clear(acc)
			for k, w := range ws {
				row := s.tmp[(st+k-y0)*rowLen : (st+k-y0+1)*rowLen]
				row = row[:len(acc)]
				for i, v := range row {
					acc[i] += v * w
				}
			}
		}
		r := dst[dstC[0]+y*ow : dstC[0]+(y+1)*ow]
		g := dst[dstC[1]+y*ow : dstC[1]+(y+1)*ow]
		bl := dst[dstC[2]+y*ow : dstC[2]+(y+1)*ow]
		g, bl = g[:len(r)], bl[:len(r)]
		for x := range r {
			a := acc[3*x : 3*x+3]
			r[x] = a[0]*mul[0] + add[0]
			g[x] = a[1]*mul[1] + add[1]
			bl[x] = a[2]*mul[2] + add[2]
		}
	}
	return nil
}

func grow[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n)
	}
	return b[:n]
}

// toRGB converts img into s.rgb: packed 8-bit RGB, row-major, alpha dropped.
func (s *scratch) toRGB(img image.Image) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	s.rgb = grow(s.rgb, w*h*3)
	out := s.rgb
	switch m := img.(type) {
	case *image.YCbCr:
		if ycbcrFancy(m, out) {
			break
		}
		for y := range h {
			o := out[y*w*3 : (y+1)*w*3]
			yy := y + b.Min.Y
			yi := m.YOffset(b.Min.X, yy)
			for x := range w {
				ci := m.COffset(x+b.Min.X, yy)
				r, g, bl := color.YCbCrToRGB(m.Y[yi+x], m.Cb[ci], m.Cr[ci])
				o[3*x], o[3*x+1], o[3*x+2] = r, g, bl
			}
		}
	case *image.NRGBA:
		for y := range h {
			row := m.Pix[m.PixOffset(b.Min.X, y+b.Min.Y):]
			o := out[y*w*3 : (y+1)*w*3]
			for x := range w {
				o[3*x], o[3*x+1], o[3*x+2] = row[4*x], row[4*x+1], row[4*x+2]
			}
		}
	case *image.RGBA:
		for y := range h {
			row := m.Pix[m.PixOffset(b.Min.X, y+b.Min.Y):]
			o := out[y*w*3 : (y+1)*w*3]
			for x := range w {
				px := row[4*x : 4*x+4]
				if px[3] == 0xff {
					o[3*x], o[3*x+1], o[3*x+2] = px[0], px[1], px[2]
					continue
				}
				c := color.NRGBAModel.Convert(color.RGBA{px[0], px[1], px[2], px[3]}).(color.NRGBA)
				o[3*x], o[3*x+1], o[3*x+2] = c.R, c.G, c.B
			}
		}
	case *image.Gray:
		for y := range h {
			row := m.Pix[m.PixOffset(b.Min.X, y+b.Min.Y):]
			o := out[y*w*3 : (y+1)*w*3]
			for x := range w {
				v := row[x]
				o[3*x], o[3*x+1], o[3*x+2] = v, v, v
			}
		}
	case *image.Paletted:
		pal := make([][3]uint8, len(m.Palette))
		for i, c := range m.Palette {
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			pal[i] = [3]uint8{n.R, n.G, n.B}
		}
		for y := range h {
			row := m.Pix[m.PixOffset(b.Min.X, y+b.Min.Y):]
			o := out[y*w*3 : (y+1)*w*3]
			for x := range w {
				var c [3]uint8
				if i := int(row[x]); i < len(pal) {
					c = pal[i] // an index past the palette is left black
				}
				o[3*x], o[3*x+1], o[3*x+2] = c[0], c[1], c[2]
			}
		}
	default:
		for y := range h {
			o := out[y*w*3 : (y+1)*w*3]
			for x := range w {
				c := color.NRGBAModel.Convert(img.At(x+b.Min.X, y+b.Min.Y)).(color.NRGBA)
				o[3*x], o[3*x+1], o[3*x+2] = c.R, c.G, c.B
			}
		}
	}
}
