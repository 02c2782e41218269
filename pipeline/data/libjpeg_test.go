//go:build cgo && !nolibjpeg

package data

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestResampleMatchesGo holds the C kernels (the AVX2 one of 8-row blocks and the row-by-row one)
// to resampleGo bit for bit, over geometries that cover every tap count of both axes (1 to many,
// the fixed-tap loops and the generic ones), row counts that are not multiples of 8, widths that
// are not multiples of 8, enlarging and shrinking, the center crop and BGR.
func TestResampleMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	type geo struct {
		sw, sh int
		p      Preprocess
	}
	direct := func(w, h int) Preprocess {
		p := DefaultPreprocess()
		p.Width, p.Height = w, h
		return p
	}
	crop := func(w, h, s int) Preprocess {
		p := direct(w, h)
		p.Resize, p.ResizeShorter = ResizeCenterCrop, s
		return p
	}
	bgr := direct(21, 13)
	bgr.ChannelOrder = BGR
	cases := []geo{
		{227, 227, DefaultPreprocess()}, {227, 227, crop(224, 224, 256)}, {500, 375, DefaultPreprocess()},
		{500, 375, crop(224, 224, 256)}, {37, 29, direct(21, 13)}, {30, 31, direct(29, 17)}, {1, 1, direct(16, 9)},
		{2, 3, direct(8, 8)}, {1000, 20, direct(16, 16)}, {5, 900, direct(40, 40)}, {3, 3, direct(1, 1)},
		{64, 96, crop(32, 48, 56)}, {9, 700, direct(7, 3)}, {37, 29, bgr}, {240, 17, direct(81, 100)},
	}
	for range 10 {
		cases = append(cases, geo{1 + rng.Intn(300), 1 + rng.Intn(300), direct(1+rng.Intn(120), 1+rng.Intn(120))})
	}
	seen := map[string]bool{}
	for _, c := range cases {
		if err := c.p.Validate(); err != nil {
			t.Fatalf("%dx%d -> %+v: %v", c.sw, c.sh, c.p, err)
		}
		img := image.NewRGBA(image.Rect(0, 0, c.sw, c.sh))
		rng.Read(img.Pix)
		for i := 3; i < len(img.Pix); i += 4 {
			img.Pix[i] = 0xff
		}
		var ref scratch
		want := make([]float32, c.p.Size())
		ref.toRGB(img)
		if err := ref.resample(c.p, c.sw, c.sh, want); err != nil {
			t.Fatal(err)
		}
		// resampleGo over the same coefficients, into a second tensor.
		got := make([]float32, c.p.Size())
		var nm norm
		oc := [3]int{0, 1, 2}
		if c.p.ChannelOrder == BGR {
			oc = [3]int{2, 1, 0}
		}
		for ch := range 3 {
			nm.mul[ch] = c.p.Scale / c.p.Std[oc[ch]]
			nm.add[ch] = -c.p.Mean[oc[ch]] / c.p.Std[oc[ch]]
			nm.dst[ch] = int32(oc[ch] * c.p.Width * c.p.Height)
		}
		resampleGo(&ref, c.sw, c.p.Width, c.p.Height, &nm, got)
		for _, simd := range []bool{true, false} {
			old := setResampleSIMD(simd)
			var s scratch
			s.toRGB(img)
			fromC := make([]float32, c.p.Size())
			err := s.resample(c.p, c.sw, c.sh, fromC)
			setResampleSIMD(old)
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if math.Float32bits(fromC[i]) != math.Float32bits(got[i]) {
					t.Fatalf("%dx%d -> %dx%d %s %s (taps x %d, y %d) simd=%v: value %d is %v in C, %v in Go",
						c.sw, c.sh, c.p.Width, c.p.Height, c.p.Resize, c.p.ChannelOrder, s.xs.maxN, s.ys.maxN, simd, i, fromC[i], got[i])
				}
			}
			if simd {
				seen[fmt.Sprintf("x%d", min(s.xs.maxN, 5))] = true
				seen[fmt.Sprintf("y%d", min(s.ys.maxN, 5))] = true
			}
		}
		if !slicesEqualBits(want, got) {
			t.Fatalf("%dx%d: resample (C) and resampleGo disagree", c.sw, c.sh)
		}
	}
	for _, k := range []string{"x1", "x2", "x3", "x4", "x5", "y1", "y2", "y3", "y4", "y5"} {
		if !seen[k] {
			t.Errorf("no case with %s taps (5 = more than 4, the generic loops)", k)
		}
	}
}

func slicesEqualBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// goDecoded decodes path with image/jpeg into packed RGB (the fallback path).
func goDecoded(t *testing.T, path string) ([]uint8, int, int) {
	t.Helper()
	img, err := DecodeFile(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	var s scratch
	s.toRGB(img)
	return s.rgb, img.Bounds().Dx(), img.Bounds().Dy()
}

// libjpegDecoded decodes path with libjpeg-turbo, failing the test if it declines.
func libjpegDecoded(t *testing.T, path string) ([]uint8, int, int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s scratch
	w, h, ok := s.decodeJPEG(b, DefaultMaxPixels)
	if !ok {
		t.Fatalf("libjpeg-turbo declined %s", path)
	}
	return s.rgb, w, h
}

// TestLibjpegDecodes compares libjpeg-turbo's pixels with image/jpeg's (same picture: IDCT rounding
// only) on CUB-100 images and the committed baseline and progressive JPEGs, and checks a grayscale
// JPEG becomes three equal channels (image/jpeg's, up to rounding).
func TestLibjpegDecodes(t *testing.T) {
	paths := []string{"testdata/pattern_420.jpg", "testdata/pattern_422.jpg", "testdata/progressive.jpg"}
	ds, err := Load(cub100(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(ds.Items); i += len(ds.Items) / 6 {
		paths = append(paths, ds.Resolve(i))
	}
	for _, p := range paths {
		lj, w, h := libjpegDecoded(t, p)
		gj, gw, gh := goDecoded(t, p)
		if w != gw || h != gh {
			t.Fatalf("%s: libjpeg %dx%d, image/jpeg %dx%d", p, w, h, gw, gh)
		}
		worst, sum := 0, 0
		for i := range gj {
			d := int(lj[i]) - int(gj[i])
			worst = max(worst, d, -d)
			sum += max(d, -d)
		}
		mean := float64(sum) / float64(len(gj))
		t.Logf("%s: %dx%d, max |libjpeg - image/jpeg| %d, mean %.3f", filepath.Base(p), w, h, worst, mean)
		if worst > 6 || mean > 0.5 {
			t.Errorf("%s: libjpeg and image/jpeg differ by up to %d (mean %.3f): not the same picture", p, worst, mean)
		}
	}

	gray := image.NewGray(image.Rect(0, 0, 19, 11))
	for i := range gray.Pix {
		gray.Pix[i] = uint8(i * 7)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, gray, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "gray.jpg")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	lj, w, h := libjpegDecoded(t, path)
	gj, _, _ := goDecoded(t, path)
	if w != 19 || h != 11 {
		t.Fatalf("gray: %dx%d", w, h)
	}
	for i := 0; i < len(lj); i += 3 {
		if d := int(lj[i]) - int(gj[i]); lj[i] != lj[i+1] || lj[i] != lj[i+2] || d > 3 || d < -3 {
			t.Fatalf("gray pixel %d: libjpeg %v, image/jpeg %v", i/3, lj[i:i+3], gj[i:i+3])
		}
	}
}

// TestLibjpegFallback: what libjpeg-turbo declines or warns about goes to image/jpeg, whose result
// or error stands, and the scratch buffers survive images of every size in turn.
func TestLibjpegFallback(t *testing.T) {
	p := DefaultPreprocess()
	cmyk, err := os.ReadFile("testdata/cmyk.jpg")
	if err != nil {
		t.Fatal(err)
	}
	var s scratch
	if _, _, ok := s.decodeJPEG(cmyk, DefaultMaxPixels); ok {
		t.Error("libjpeg path took a CMYK JPEG; it should leave it to image/jpeg")
	}
	dst := make([]float32, p.Size())
	if err := s.file(p, "testdata/cmyk.jpg", dst); err != nil {
		t.Errorf("CMYK JPEG through the fallback: %v", err)
	}
	img, err := DecodeFile("testdata/cmyk.jpg", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, isCMYK := img.(*image.CMYK); !isCMYK {
		t.Errorf("testdata/cmyk.jpg decodes to %T, want *image.CMYK", img)
	}

	whole, err := os.ReadFile("testdata/pattern_420.jpg")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"truncated.jpg", whole[:len(whole)*2/3], "jpeg"},
		{"soi-only.jpg", whole[:4], "EOF"},
		{"garbage.jpg", append([]byte{0xff, 0xd8, 0xff, 0xe0}, bytes.Repeat([]byte{0x5a}, 200)...), "jpeg"},
	} {
		if _, _, ok := s.decodeJPEG(c.b, DefaultMaxPixels); ok {
			t.Errorf("%s: libjpeg path accepted it", c.name)
		}
		path := filepath.Join(dir, c.name)
		if err := os.WriteFile(path, c.b, 0o644); err != nil {
			t.Fatal(err)
		}
		err := s.file(p, path, dst)
		var ie *ImageError
		if !errors.As(err, &ie) || ie.Path != path || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want an *ImageError naming the file and saying %q", c.name, err, c.want)
		}
	}

	if _, _, ok := s.decodeJPEG(whole, 37*29-1); ok {
		t.Error("libjpeg path decoded an image over maxPixels")
	}
	small := p
	small.MaxPixels = 37*29 - 1
	if err := s.file(small, "testdata/pattern_420.jpg", dst); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over MaxPixels: %v, want ErrTooLarge", err)
	}

	// One scratch through a small, a large and a small image gives what fresh scratches give.
	cub := cub100(t)
	for _, path := range []string{"testdata/pattern_422.jpg", filepath.Join(cub, "images/Black_footed_Albatross/0000.jpg"),
		"testdata/progressive.jpg", "testdata/pattern_420.jpg"} {
		if err := s.file(p, path, dst); err != nil {
			t.Fatal(err)
		}
		var fresh scratch
		want := make([]float32, p.Size())
		if err := fresh.file(p, path, want); err != nil {
			t.Fatal(err)
		}
		if !slicesEqualBits(dst, want) {
			t.Errorf("%s: a reused scratch gives another tensor than a fresh one", path)
		}
	}
	if !strings.Contains(p.Key(), "decoder=libjpeg-turbo-") {
		t.Errorf("Key %q does not name the decoder", p.Key())
	}
}

// FuzzDecodeJPEG feeds arbitrary bytes to the libjpeg-turbo path (C code reading hostile files):
// no crash, no hang; an accepted image has its header's size within the pixel cap and a full RGB
// buffer, and s.file either gives a tensor or an *ImageError naming the file.
func FuzzDecodeJPEG(f *testing.F) {
	for _, name := range []string{"pattern_420.jpg", "pattern_422.jpg", "progressive.jpg", "cmyk.jpg"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	p := DefaultPreprocess()
	p.Width, p.Height = 16, 12
	const maxPixels = 1 << 16 // small, so that executions (and minimizations) stay fast
	p.MaxPixels = maxPixels
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		var s scratch
		if w, h, ok := s.decodeJPEG(b, maxPixels); ok {
			if w <= 0 || h <= 0 || w*h > maxPixels || len(s.rgb) != w*h*3 {
				t.Fatalf("accepted %dx%d with %d bytes of RGB (cap %d pixels)", w, h, len(s.rgb), maxPixels)
			}
		}
		path := filepath.Join(dir, "in.jpg")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		dst := make([]float32, p.Size())
		if err := s.file(p, path, dst); err != nil {
			var ie *ImageError
			if !errors.As(err, &ie) || ie.Path != path {
				t.Fatalf("error %v is not an *ImageError naming the file", err)
			}
			return
		}
		for i, v := range dst {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("value %d of the tensor is %v", i, v)
			}
		}
	})
}
