package data

import (
	"fmt"
	"image"
	"image/color"
	"math"
)

// scratch holds the reusable buffers of one decoding goroutine. Its zero value is ready to use.
type scratch struct {
	enc    []byte    // the encoded file
	rgb    []uint8   // source pixels, packed RGB, srcW*srcH*3
	acc    []float32 // one vertically resampled source-width row, packed RGB, plus zero pixels
	simd   []float32 // the C kernel's 8-row blocks
	xs, ys coeffs
}

// coeffs are the bilinear (triangle filter) weights of one axis: output pixel i reads taps
// w[i*stride : i*stride+n[i]] starting at source pixel start[i].
type coeffs struct {
	in, full, off, out int // cache key: source length, resized length, crop offset, output length
	start, n           []int32
	w                  []float32 // zero past n[i] in each stride
	stride             int
	maxN               int32 // the largest n[i]
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
	c.maxN = 0
	scale := float64(in) / float64(full)
	filterscale := max(scale, 1)
	support := filterscale // bilinear support 1, times filterscale
	c.stride = int(math.Ceil(support))*2 + 1
	c.start = make([]int32, out)
	c.n = make([]int32, out)
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
		c.start[i], c.n[i] = int32(xmin+lo), int32(hi-lo)
		c.maxN = max(c.maxN, c.n[i])
		for k := lo; k < hi; k++ {
			c.w[i*c.stride+k-lo] = float32(ws[k] / total)
		}
	}
}

// file decodes path and writes its tensor into dst.
func (s *scratch) file(p Preprocess, path string, dst []float32) error {
	b, err := readFile(path, s.enc)
	s.enc = b[:0]
	if err != nil {
		return &ImageError{Path: path, Item: -1, Err: err}
	}
	return s.encoded(p, path, b, dst)
}

// encoded writes the tensor of the encoded JPEG or PNG image b (named path in errors) into dst:
// libjpeg-turbo straight into the packed RGB buffer when it can, else the Go decoders.
func (s *scratch) encoded(p Preprocess, path string, b []byte, dst []float32) error {
	if w, h, ok := s.decodeJPEG(b, pixelCap(p.MaxPixels)); ok {
		if err := s.resample(p, w, h, dst); err != nil {
			return &ImageError{Path: path, Item: -1, Err: err}
		}
		return nil
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
	s.toRGB(img)
	return s.resample(p, img.Bounds().Dx(), img.Bounds().Dy(), dst)
}

// resample writes the tensor of the packed RGB image in s.rgb (sw x sh) into dst.
func (s *scratch) resample(p Preprocess, sw, sh int, dst []float32) error {
	if len(dst) != p.Size() {
		return fmt.Errorf("data: tensor: destination holds %d floats, want 3*%d*%d = %d", len(dst), p.Height, p.Width, p.Size())
	}
	if sw <= 0 || sh <= 0 || len(s.rgb) < sw*sh*3 {
		return fmt.Errorf("data: tensor: empty image %dx%d", sw, sh)
	}
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

	// Source channel c (R, G, B) goes to output channel oc[c], normalized with Mean[oc[c]], Std[oc[c]].
	oc := [3]int{0, 1, 2}
	if p.ChannelOrder == BGR {
		oc = [3]int{2, 1, 0}
	}
	var n norm
	plane := p.Width * p.Height
	for c := range 3 {
		n.mul[c] = p.Scale / p.Std[oc[c]]
		n.add[c] = -p.Mean[oc[c]] / p.Std[oc[c]]
		n.dst[c] = int32(oc[c] * plane)
	}
	// One packed row of the source width, and zero pixels after it for the C kernel's fixed taps.
	s.acc = grow(s.acc, (sw+int(s.xs.maxN))*3)
	clear(s.acc[sw*3:])
	resampleRGB(s, sw, p.Width, p.Height, &n, dst)
	return nil
}

// norm is the per-channel normalization of resample: source channel c (R, G, B) becomes
// value*mul[c] + add[c] at offset dst[c] of the tensor (its output channel's plane).
type norm struct {
	mul, add [3]float32
	dst      [3]int32
}

// resampleGo is the portable resampling kernel. Per output row: the vertical pass over the packed
// source rows (s.rgb -> s.acc, source width), then the horizontal pass with the normalization
// into the channel planes. Every sum is its first product plus the others in order, each product
// rounded to float32 (no fused multiply-add). Builds with libjpeg-turbo run the C copy of it
// (libjpeg.go), which TestResampleMatchesGo holds to this one bit for bit; the C copy sums a fixed
// xs.maxN taps per output, the extra ones reading the zero padding of s.acc or zero weights: all
// terms are >= 0, so adding those +0 changes no float.
func resampleGo(s *scratch, sw, ow, oh int, nm *norm, dst []float32) {
	rl := sw * 3
	acc := s.acc[:rl]
	xs, ys := &s.xs, &s.ys
	for y := range oh {
		st, n := int(ys.start[y]), int(ys.n[y])
		ws := ys.w[y*ys.stride : y*ys.stride+n]
		w0 := ws[0]
		r0 := s.rgb[st*rl : (st+1)*rl]
		switch n { // 2 and 3 taps in one pass, the same sums as the general loop
		case 2:
			w1, r1 := ws[1], s.rgb[(st+1)*rl:(st+2)*rl]
			r1 = r1[:len(r0)]
			for i, v := range r0 {
				acc[i] = float32(float32(v)*w0) + float32(float32(r1[i])*w1)
			}
		case 3:
			w1, w2 := ws[1], ws[2]
			r1, r2 := s.rgb[(st+1)*rl:(st+2)*rl], s.rgb[(st+2)*rl:(st+3)*rl]
			r1, r2 = r1[:len(r0)], r2[:len(r0)]
			for i, v := range r0 {
				acc[i] = float32(float32(float32(v)*w0)+float32(float32(r1[i])*w1)) + float32(float32(r2[i])*w2)
			}
		default:
			for i, v := range r0 {
				acc[i] = float32(float32(v) * w0)
			}
			for k := 1; k < n; k++ {
				w := ws[k]
				row := s.rgb[(st+k)*rl : (st+k+1)*rl]
				row = row[:len(acc)]
				for i, v := range row {
					acc[i] += float32(float32(v) * w)
				}
			}
		}
		R := dst[int(nm.dst[0])+y*ow : int(nm.dst[0])+(y+1)*ow]
		G := dst[int(nm.dst[1])+y*ow : int(nm.dst[1])+(y+1)*ow]
		B := dst[int(nm.dst[2])+y*ow : int(nm.dst[2])+(y+1)*ow]
		G, B = G[:len(R)], B[:len(R)]
		m0, m1, m2, a0, a1, a2 := nm.mul[0], nm.mul[1], nm.mul[2], nm.add[0], nm.add[1], nm.add[2]
		for x := range R {
			n := int(xs.n[x])
			w := xs.w[x*xs.stride : x*xs.stride+n]
			p := acc[3*int(xs.start[x]) : 3*(int(xs.start[x])+n)]
			r, g, b := float32(p[0]*w[0]), float32(p[1]*w[0]), float32(p[2]*w[0])
			for k := 1; k < n; k++ {
				r += float32(p[3*k] * w[k])
				g += float32(p[3*k+1] * w[k])
				b += float32(p[3*k+2] * w[k])
			}
			R[x] = float32(r*m0) + a0
			G[x] = float32(g*m1) + a1
			B[x] = float32(b*m2) + a2
		}
	}
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
