package data

import (
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// identity returns p with normalization turned off, so tensors hold 8-bit-scale RGB values.
func identity(p Preprocess) Preprocess {
	p.Scale, p.Mean, p.Std = 1, [3]float32{}, [3]float32{1, 1, 1}
	return p
}

func mustTensor(t *testing.T, p Preprocess, img image.Image) []float32 {
	t.Helper()
	dst := make([]float32, p.Size())
	if err := p.Tensor(img, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestTensorConstant checks exact normalized values of single-colour images of every source type
// through both resize modes, up and down: a resized constant image is constant. Tolerance 1e-5
// (float32 rounding of up to ~90 weights summing to 1, and of the normalization).
func TestTensorConstant(t *testing.T) {
	const r, g, b = 200, 100, 50
	def := DefaultPreprocess()
	bgr := def
	bgr.ChannelOrder = BGR
	crop := def
	crop.Resize, crop.ResizeShorter, crop.Width, crop.Height = ResizeCenterCrop, 256, 224, 200
	small := def
	small.Width, small.Height = 7, 5

	pal := image.NewPaletted(image.Rect(0, 0, 30, 20), color.Palette{color.Black, color.RGBA{r, g, b, 255}})
	for i := range pal.Pix {
		pal.Pix[i] = 1
	}
	rgba := image.NewRGBA(image.Rect(5, 5, 305, 205)) // non-zero origin
	for i := 0; i < len(rgba.Pix); i += 4 {
		copy(rgba.Pix[i:], []uint8{r, g, b, 255})
	}
	cmyk := image.NewCMYK(image.Rect(0, 0, 9, 9))
	c, m, y, k := color.RGBToCMYK(r, g, b)
	for i := 0; i < len(cmyk.Pix); i += 4 {
		copy(cmyk.Pix[i:], []uint8{c, m, y, k})
	}
	images := map[string]image.Image{
		"nrgba 3x2":   uniform(3, 2, color.NRGBA{r, g, b, 255}),
		"nrgba alpha": uniform(640, 480, color.NRGBA{r, g, b, 40}), // alpha is dropped
		"rgba offset": rgba,
		"paletted":    pal,
		"cmyk":        cmyk,
		"nrgba64 (16-bit)": func() image.Image {
			m := image.NewNRGBA64(image.Rect(0, 0, 50, 60))
			for y := range 60 {
				for x := range 50 {
					m.SetNRGBA64(x, y, color.NRGBA64{r * 257, g * 257, b * 257, 0xffff})
				}
			}
			return m
		}(),
	}
	for pname, p := range map[string]Preprocess{"default": def, "bgr": bgr, "center crop": crop, "7x5": small} {
		for iname, img := range images {
			t.Run(pname+"/"+iname, func(t *testing.T) {
				got := mustTensor(t, p, img)
				want := [3]float64{r, g, b}
				if p.ChannelOrder == BGR {
					want = [3]float64{b, g, r}
				}
				mean, std := p.Mean, p.Std // in output channel order
				plane := p.Width * p.Height
				for ch := range 3 {
					w := (want[ch]/255 - float64(mean[ch])) / float64(std[ch])
					for i, v := range got[ch*plane : (ch+1)*plane] {
						if math.Abs(float64(v)-w) > 1e-5 {
							t.Fatalf("channel %d pixel %d = %.7f, want %.7f", ch, i, v, w)
						}
					}
				}
			})
		}
	}
}

func TestTensorGrayAndBGR(t *testing.T) {
	gray := image.NewGray(image.Rect(0, 0, 31, 17))
	for i := range gray.Pix {
		gray.Pix[i] = uint8(i * 7)
	}
	p := identity(DefaultPreprocess())
	p.Width, p.Height = 20, 40
	got := mustTensor(t, p, gray)
	plane := p.Width * p.Height
	for i := range plane {
		if got[i] != got[plane+i] || got[i] != got[2*plane+i] {
			t.Fatalf("gray pixel %d: channels %v %v %v differ", i, got[i], got[plane+i], got[2*plane+i])
		}
	}

	img := syntheticPattern(50, 40)
	rgb := mustTensor(t, p, img)
	q := p
	q.ChannelOrder = BGR
	bgr := mustTensor(t, q, img)
	for i := range plane {
		if rgb[i] != bgr[2*plane+i] || rgb[plane+i] != bgr[plane+i] || rgb[2*plane+i] != bgr[i] {
			t.Fatalf("pixel %d: RGB %v,%v,%v vs BGR %v,%v,%v", i, rgb[i], rgb[plane+i], rgb[2*plane+i],
				bgr[i], bgr[plane+i], bgr[2*plane+i])
		}
	}
}

// TestTensorPremultipliedAlpha: *image.RGBA stores premultiplied colour; the straight colour is used.
func TestTensorPremultipliedAlpha(t *testing.T) {
	m := image.NewRGBA(image.Rect(0, 0, 2, 2))
	for i := 0; i < len(m.Pix); i += 4 {
		copy(m.Pix[i:], []uint8{100, 50, 0, 128}) // straight (199, 99, 0)
	}
	p := identity(DefaultPreprocess())
	p.Width, p.Height = 2, 2
	got := mustTensor(t, p, m)
	if got[0] != 199 || got[4] != 99 || got[8] != 0 {
		t.Errorf("got R %v G %v B %v, want 199 99 0", got[0], got[4], got[8])
	}
}

// TestResizeKnownValues checks the kernel on hand-computed 1-D cases.
func TestResizeKnownValues(t *testing.T) {
	row := func(vals ...uint8) *image.Gray {
		m := image.NewGray(image.Rect(0, 0, len(vals), 1))
		copy(m.Pix, vals)
		return m
	}
	cases := []struct {
		name string
		src  *image.Gray
		w    int
		want []float64
	}{
		// Enlarging is PyTorch's bilinear, align_corners=False: source x = (i+0.5)/2-0.5, clamped.
		{"2 to 4", row(0, 255), 4, []float64{0, 63.75, 191.25, 255}},
		// Shrinking widens the triangle by the scale (PIL): 4 to 2, centers 1 and 3, support 2,
		// weights (0.75, 0.75, 0.25)/1.75 and (0.25, 0.75, 0.75)/1.75.
		{"4 to 2", row(0, 85, 170, 255), 2, []float64{(85*0.75 + 170*0.25) / 1.75, (85*0.25 + 170*0.75 + 255*0.75) / 1.75}},
		{"identity", row(3, 1, 4, 1, 5), 5, []float64{3, 1, 4, 1, 5}},
	}
	for _, c := range cases {
		p := identity(DefaultPreprocess())
		p.Width, p.Height = c.w, 1
		got := mustTensor(t, p, c.src)
		for i, w := range c.want {
			if math.Abs(float64(got[i])-w) > 1e-4 {
				t.Errorf("%s: pixel %d = %v, want %v", c.name, i, got[i], w)
			}
		}
	}
}

// TestCenterCropGeometry: with resize_shorter equal to the shorter side no resampling happens and
// the crop takes the central pixels (torchvision rounding of the offset).
func TestCenterCropGeometry(t *testing.T) {
	img := syntheticPattern(9, 4)
	p := identity(DefaultPreprocess())
	p.Resize, p.ResizeShorter, p.Width, p.Height = ResizeCenterCrop, 4, 4, 4
	got := mustTensor(t, p, img)
	const left = 2 // round((9-4)/2) = round(2.5) = 2, half to even
	for y := range 4 {
		for x := range 4 {
			c := img.NRGBAAt(x+left, y)
			if got[y*4+x] != float32(c.R) || got[16+y*4+x] != float32(c.G) || got[32+y*4+x] != float32(c.B) {
				t.Fatalf("pixel (%d,%d) = %v,%v,%v, want source (%d,%d) %v", x, y, got[y*4+x], got[16+y*4+x],
					got[32+y*4+x], x+left, y, c)
			}
		}
	}
}

type pilCase struct {
	Source        string
	SrcWidth      int `json:"src_width"`
	SrcHeight     int `json:"src_height"`
	Resize        string
	Width, Height int
	ResizeShorter int      `json:"resize_shorter"`
	Samples       [][5]int // x, y, r, g, b
}

// TestMatchesPIL compares with PIL 9.4 (testdata/make_pil_golden.py): synthetic patterns through
// the resize kernel alone (max error 1.0, mean 0.4: PIL rounds to 8 bits after each pass), committed JPEGs
// decoded (libjpeg-turbo builds: exact, PIL uses libjpeg-turbo; image/jpeg: max 3, IDCT rounding,
// chroma upsampling and colour conversion follow libjpeg), and CUB-100 JPEGs decoded and resized
// (libjpeg-turbo: max 1.0, mean 0.4 as the kernel alone; image/jpeg: max 3, mean 0.5).
func TestMatchesPIL(t *testing.T) {
	b, err := os.ReadFile("testdata/pil_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct{ Cases []pilCase }
	if err := json.Unmarshal(b, &golden); err != nil {
		t.Fatal(err)
	}
	for _, c := range golden.Cases {
		name := fmt.Sprintf("%s %s %dx%d", c.Source, c.Resize, c.Width, c.Height)
		if c.Source == "pattern" {
			name = fmt.Sprintf("pattern %dx%d %s %dx%d", c.SrcWidth, c.SrcHeight, c.Resize, c.Width, c.Height)
		}
		t.Run(name, func(t *testing.T) {
			p := identity(DefaultPreprocess())
			p.Width, p.Height, p.Resize, p.ResizeShorter = c.Width, c.Height, c.Resize, c.ResizeShorter
			dst := make([]float32, p.Size())
			maxErr, maxMean := 1.0, 0.4
			switch {
			case c.Source == "pattern":
				if err := p.Tensor(syntheticPattern(c.SrcWidth, c.SrcHeight), dst); err != nil {
					t.Fatal(err)
				}
			case strings.HasPrefix(c.Source, "testdata/"):
				maxErr, maxMean = 3, 0.5
				if jpegDecoder != "go" { // libjpeg-turbo decodes as PIL does, and the size is kept: exact
					maxErr, maxMean = 1e-4, 1e-4
				}
				if err := p.TensorFile(c.Source, dst); err != nil {
					t.Fatal(err)
				}
			default:
				maxErr, maxMean = 3, 0.5
				if jpegDecoder != "go" { // PIL's own decoder: only the resampling's 8-bit rounding remains
					maxErr, maxMean = 1.0, 0.4
				}
				if err := p.TensorFile(filepath.Join(cub100(t), c.Source), dst); err != nil {
					t.Fatal(err)
				}
			}
			plane := c.Width * c.Height
			var worst, sum float64
			for _, s := range c.Samples {
				for ch := range 3 {
					d := math.Abs(float64(dst[ch*plane+s[1]*c.Width+s[0]]) - float64(s[2+ch]))
					worst = max(worst, d)
					sum += d
				}
			}
			mean := sum / float64(3*len(c.Samples))
			t.Logf("max abs diff %.3f, mean %.3f (8-bit scale)", worst, mean)
			if worst > maxErr || mean > maxMean {
				t.Errorf("max abs diff %.3f (limit %v), mean %.3f (limit %v) against PIL", worst, maxErr, mean, maxMean)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.png")
	writeImage(t, big, uniform(100, 60, color.White))
	p := DefaultPreprocess()
	p.MaxPixels = 5999
	err := p.TensorFile(big, make([]float32, p.Size()))
	var ie *ImageError
	if !errors.Is(err, ErrTooLarge) || !errors.As(err, &ie) || ie.Path != big || !strings.Contains(err.Error(), "100x60") {
		t.Errorf("over the cap: err %v, want ErrTooLarge naming %q and 100x60", err, big)
	}
	p.MaxPixels = 6000
	if err := p.TensorFile(big, make([]float32, p.Size())); err != nil {
		t.Errorf("at the cap: %v", err)
	}

	junk := filepath.Join(dir, "junk.jpg")
	writeFile(t, junk, "this is not a jpeg")
	if err := p.TensorFile(junk, make([]float32, p.Size())); !errors.As(err, &ie) || ie.Path != junk {
		t.Errorf("junk: err %v, want *ImageError naming %q", err, junk)
	}
	trunc := filepath.Join(dir, "trunc.png")
	b, _ := os.ReadFile(big)
	writeFile(t, trunc, string(b[:len(b)/2]))
	if err := p.TensorFile(trunc, make([]float32, p.Size())); err == nil || !strings.Contains(err.Error(), trunc) {
		t.Errorf("truncated png: err %v, want one naming %q", err, trunc)
	}
	if err := p.Tensor(uniform(2, 2, color.White), make([]float32, 5)); err == nil {
		t.Error("short destination accepted")
	}
}

func TestPreprocessValidate(t *testing.T) {
	if err := DefaultPreprocess().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := map[string]func(p *Preprocess){
		"zero width":          func(p *Preprocess) { p.Width = 0 },
		"unknown resize":      func(p *Preprocess) { p.Resize = "nearest" },
		"crop shorter small":  func(p *Preprocess) { p.Resize, p.ResizeShorter = ResizeCenterCrop, 200 },
		"shorter with resize": func(p *Preprocess) { p.ResizeShorter = 256 },
		"zero std":            func(p *Preprocess) { p.Std[1] = 0 },
		"nan mean":            func(p *Preprocess) { p.Mean[2] = float32(math.NaN()) },
		"zero scale":          func(p *Preprocess) { p.Scale = 0 },
		"channel order":       func(p *Preprocess) { p.ChannelOrder = "rgb" },
	}
	for name, f := range bad {
		p := DefaultPreprocess()
		f(&p)
		if err := p.Validate(); err == nil || !strings.HasPrefix(err.Error(), "data: preprocess: ") {
			t.Errorf("%s: err %v", name, err)
		}
	}
}

func TestPreprocessMetadata(t *testing.T) {
	def := DefaultPreprocess()
	m := def.Metadata()
	want := map[string]string{
		"preprocess.size": "224x224", "preprocess.resize": "resize", "preprocess.resize_shorter": "0",
		"preprocess.mean": "0.485,0.456,0.406", "preprocess.std": "0.229,0.224,0.225",
		"preprocess.scale": "0.003921569", "preprocess.channel_order": "RGB", "preprocess.layout": "NCHW",
	}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Errorf("metadata\n%v\nwant\n%v", m, want)
	}
	crop := def
	crop.Resize, crop.ResizeShorter, crop.Width, crop.ChannelOrder = ResizeCenterCrop, 256, 200, BGR
	for _, p := range []Preprocess{def, crop} {
		meta := p.Metadata()
		meta["other.key"] = "ignored"
		back, err := PreprocessFromMetadata(meta)
		if err != nil || back != p {
			t.Errorf("round trip of %+v: %+v, %v", p, back, err)
		}
	}
	if def.Key() == crop.Key() || def.Key() != DefaultPreprocess().Key() {
		t.Error("Key is not a function of the settings")
	}
	if !strings.Contains(def.Key(), "kernel=") {
		t.Errorf("Key %q lacks the kernel version", def.Key())
	}
	noCap := def
	noCap.MaxPixels = 10
	if noCap.Key() != def.Key() {
		t.Error("MaxPixels changed the key")
	}

	for name, c := range map[string]struct {
		edit map[string]string
		want string
	}{
		"missing size": {map[string]string{"preprocess.size": ""}, "missing"},
		"bad size":     {map[string]string{"preprocess.size": "224"}, "WIDTHxHEIGHT"},
		"layout":       {map[string]string{"preprocess.layout": "NHWC"}, "only NCHW"},
		"unknown key":  {map[string]string{"preprocess.flip": "1"}, "unknown preprocessing key"},
		"bad mean":     {map[string]string{"preprocess.mean": "0.1,0.2"}, "3 comma-separated"},
		"bad std":      {map[string]string{"preprocess.std": "1,0,1"}, "std[1]"},
	} {
		meta := def.Metadata()
		for k, v := range c.edit {
			if v == "" {
				delete(meta, k)
			} else {
				meta[k] = v
			}
		}
		if _, err := PreprocessFromMetadata(meta); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", name, err, c.want)
		}
	}
	// Only the size is required; the rest defaults.
	p, err := PreprocessFromMetadata(map[string]string{"preprocess.size": "64x32"})
	if err != nil || p.Width != 64 || p.Height != 32 || p.Mean != def.Mean {
		t.Errorf("size only: %+v, %v", p, err)
	}
}
