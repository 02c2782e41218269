package data

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // register the JPEG decoder
	_ "image/png"  // register the PNG decoder
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Resize modes of Preprocess.Resize.
const (
	// ResizeDirect resizes the whole image to Width x Height, ignoring the aspect ratio.
	ResizeDirect = "resize"
	// ResizeCenterCrop resizes the shorter side to ResizeShorter keeping the aspect ratio, then
	// crops the central Width x Height (torchvision's Resize(s) + CenterCrop((h, w))).
	ResizeCenterCrop = "resize_center_crop"
)

// Channel orders of Preprocess.ChannelOrder.
const (
	RGB = "RGB"
	BGR = "BGR"
)

// LayoutNCHW is the only tensor layout this package writes.
const LayoutNCHW = "NCHW"

// DefaultMaxPixels is the largest image (width*height) decoded when Preprocess.MaxPixels is 0.
const DefaultMaxPixels = 50_000_000

// resampleVersion names the resampling kernel; it is part of Key so cached features are rebuilt
// if the kernel ever changes.
const resampleVersion = "bilinear-pil-v2"

// Preprocess describes how an image becomes a (3, Height, Width) float32 tensor: resize (bilinear),
// then value*Scale, minus Mean, divided by Std, per channel, in ChannelOrder. Mean[k] and Std[k]
// apply to output channel k: with BGR, Mean[0] is the blue channel's mean.
//
// The bilinear kernel is PIL's (and torchvision's antialiased) triangle filter with half-pixel
// centers: identical to PyTorch's bilinear interpolate(align_corners=False) when enlarging, and
// widened by the scale factor when shrinking (antialiasing). Computation is in float32 without
// PIL's intermediate rounding to 8 bits, so results differ from PIL by at most about 1/255 before
// normalization.
type Preprocess struct {
	Width, Height int
	Resize        string     // ResizeDirect or ResizeCenterCrop
	ResizeShorter int        // shorter side before the crop, ResizeCenterCrop only; >= max(Width, Height)
	Mean, Std     [3]float32 // per output channel, in ChannelOrder
	Scale         float32    // applied to 8-bit values before Mean/Std, usually 1/255
	ChannelOrder  string     // RGB or BGR: the order of the output channels
	// MaxPixels caps width*height of decoded files (0 means DefaultMaxPixels). It protects memory,
	// does not change the numbers, and is not part of Key or Metadata.
	MaxPixels int
}

// DefaultPreprocess returns the ImageNet preprocessing of the project's backbones: bilinear resize to
// 224x224, /255, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), RGB, NCHW.
func DefaultPreprocess() Preprocess {
	return Preprocess{
		Width: 224, Height: 224,
		Resize:       ResizeDirect,
		Mean:         [3]float32{0.485, 0.456, 0.406},
		Std:          [3]float32{0.229, 0.224, 0.225},
		Scale:        1.0 / 255,
		ChannelOrder: RGB,
	}
}

// Size returns the number of float32 values of one image tensor: 3*Height*Width.
func (p Preprocess) Size() int { return 3 * p.Height * p.Width }

// Validate checks the settings.
func (p Preprocess) Validate() error {
	const maxSide = 16384
	switch {
	case p.Width <= 0 || p.Height <= 0 || p.Width > maxSide || p.Height > maxSide:
		return fmt.Errorf("data: preprocess: size %dx%d out of range 1..%d", p.Width, p.Height, maxSide)
	case p.Resize != ResizeDirect && p.Resize != ResizeCenterCrop:
		return fmt.Errorf("data: preprocess: resize %q, want %q or %q", p.Resize, ResizeDirect, ResizeCenterCrop)
	case p.Resize == ResizeCenterCrop && (p.ResizeShorter < max(p.Width, p.Height) || p.ResizeShorter > maxSide):
		return fmt.Errorf("data: preprocess: resize_shorter %d must be in %d..%d to crop %dx%d",
			p.ResizeShorter, max(p.Width, p.Height), maxSide, p.Width, p.Height)
	case p.Resize == ResizeDirect && p.ResizeShorter != 0:
		return fmt.Errorf("data: preprocess: resize_shorter %d set with resize %q (want 0)", p.ResizeShorter, p.Resize)
	case !(p.Scale > 0) || math.IsInf(float64(p.Scale), 0):
		return fmt.Errorf("data: preprocess: scale %v must be positive and finite", p.Scale)
	case p.ChannelOrder != RGB && p.ChannelOrder != BGR:
		return fmt.Errorf("data: preprocess: channel order %q, want %q or %q", p.ChannelOrder, RGB, BGR)
	case p.MaxPixels < 0:
		return fmt.Errorf("data: preprocess: max pixels %d is negative", p.MaxPixels)
	}
	for c := range 3 {
		m, s := float64(p.Mean[c]), float64(p.Std[c])
		if math.IsNaN(m) || math.IsInf(m, 0) {
			return fmt.Errorf("data: preprocess: mean[%d] %v is not finite", c, p.Mean[c])
		}
		if !(s > 0) || math.IsInf(s, 0) {
			return fmt.Errorf("data: preprocess: std[%d] %v must be positive and finite", c, p.Std[c])
		}
	}
	return nil
}

// Metadata keys written by Metadata and read by PreprocessFromMetadata.
const (
	MetaSize          = "preprocess.size"           // "224x224" (width x height)
	MetaResize        = "preprocess.resize"         // ResizeDirect or ResizeCenterCrop
	MetaResizeShorter = "preprocess.resize_shorter" // integer, "0" unless ResizeCenterCrop
	MetaMean          = "preprocess.mean"           // "0.485,0.456,0.406"
	MetaStd           = "preprocess.std"            // "0.229,0.224,0.225"
	MetaScale         = "preprocess.scale"          // "0.003921569"
	MetaChannelOrder  = "preprocess.channel_order"  // RGB or BGR
	MetaLayout        = "preprocess.layout"         // always NCHW
)

func fmtFloat(f float32) string { return strconv.FormatFloat(float64(f), 'g', -1, 32) }

func fmtTriple(v [3]float32) string {
	return fmtFloat(v[0]) + "," + fmtFloat(v[1]) + "," + fmtFloat(v[2])
}

// Metadata returns the settings as string key/value pairs (the Meta* keys), for ONNX model
// metadata and cache files. Floats use the shortest text that reads back to the same float32.
func (p Preprocess) Metadata() map[string]string {
	return map[string]string{
		MetaSize:          fmt.Sprintf("%dx%d", p.Width, p.Height),
		MetaResize:        p.Resize,
		MetaResizeShorter: strconv.Itoa(p.ResizeShorter),
		MetaMean:          fmtTriple(p.Mean),
		MetaStd:           fmtTriple(p.Std),
		MetaScale:         fmtFloat(p.Scale),
		MetaChannelOrder:  p.ChannelOrder,
		MetaLayout:        LayoutNCHW,
	}
}

// JPEGDecoder names the JPEG decoder of this build: "libjpeg-turbo-<version number>" (cgo, the
// default) or "go" (image/jpeg, with -tags nolibjpeg or without cgo). Their pixels differ by IDCT
// rounding, so runs record it.
func JPEGDecoder() string { return jpegDecoder }

// Key returns a stable one-line text of the settings that change the tensors (MaxPixels excluded),
// including the resampling kernel's version and the JPEG decoder of the build, for cache keys.
func (p Preprocess) Key() string {
	m := p.Metadata()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString("kernel=" + resampleVersion + ";decoder=" + jpegDecoder)
	for _, k := range keys {
		b.WriteString(";" + strings.TrimPrefix(k, "preprocess.") + "=" + m[k])
	}
	return b.String()
}

// PreprocessFromMetadata parses the Meta* keys written by Metadata. MetaSize is required; other
// missing keys take DefaultPreprocess's values (resize_shorter: 0). Keys without the "preprocess."
// prefix are ignored; unknown "preprocess." keys are an error, since they may change the numbers.
func PreprocessFromMetadata(meta map[string]string) (Preprocess, error) {
	p := DefaultPreprocess()
	bad := func(key, val string, why string) (Preprocess, error) {
		return Preprocess{}, fmt.Errorf("data: preprocess metadata %s=%q: %s", key, val, why)
	}
	size, ok := meta[MetaSize]
	if !ok {
		return Preprocess{}, fmt.Errorf("data: preprocess metadata: missing %q", MetaSize)
	}
	ws, hs, ok := strings.Cut(size, "x")
	w, errW := strconv.Atoi(ws)
	h, errH := strconv.Atoi(hs)
	if !ok || errW != nil || errH != nil {
		return bad(MetaSize, size, `want "WIDTHxHEIGHT"`)
	}
	p.Width, p.Height = w, h
	for k, v := range meta {
		if !strings.HasPrefix(k, "preprocess.") {
			continue
		}
		var err error
		switch k {
		case MetaSize:
		case MetaResize:
			p.Resize = v
		case MetaResizeShorter:
			p.ResizeShorter, err = strconv.Atoi(v)
		case MetaMean:
			p.Mean, err = parseTriple(v)
		case MetaStd:
			p.Std, err = parseTriple(v)
		case MetaScale:
			var f float64
			f, err = strconv.ParseFloat(v, 32)
			p.Scale = float32(f)
		case MetaChannelOrder:
			p.ChannelOrder = strings.ToUpper(v)
		case MetaLayout:
			if v != LayoutNCHW {
				return bad(k, v, "only "+LayoutNCHW+" is supported")
			}
		default:
			return bad(k, v, "unknown preprocessing key")
		}
		if err != nil {
			return bad(k, v, err.Error())
		}
	}
	if err := p.Validate(); err != nil {
		return Preprocess{}, err
	}
	return p, nil
}

func parseTriple(s string) ([3]float32, error) {
	var v [3]float32
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return v, errors.New("want 3 comma-separated numbers")
	}
	for i, part := range parts {
		f, err := strconv.ParseFloat(strings.TrimSpace(part), 32)
		if err != nil {
			return v, err
		}
		v[i] = float32(f)
	}
	return v, nil
}

// ImageError is a file that could not be decoded or preprocessed.
type ImageError struct {
	Path string
	Item int // index into Dataset.Items, -1 when unknown
	Err  error
}

func (e *ImageError) Error() string { return fmt.Sprintf("data: image %q: %v", e.Path, e.Err) }
func (e *ImageError) Unwrap() error { return e.Err }

// ErrTooLarge is wrapped by decoding errors of images over the MaxPixels cap.
var ErrTooLarge = errors.New("image too large")

// DecodeFile decodes a JPEG or PNG file after checking from its header that width*height is at most
// maxPixels (0 means DefaultMaxPixels). Errors are *ImageError values naming the file.
func DecodeFile(path string, maxPixels int) (image.Image, error) {
	b, err := readFile(path, nil)
	if err != nil {
		return nil, &ImageError{Path: path, Item: -1, Err: err}
	}
	return decodeBytes(path, b, maxPixels)
}

// pixelCap is the image size cap for a MaxPixels setting (0 or less: DefaultMaxPixels).
func pixelCap(maxPixels int) int {
	if maxPixels <= 0 {
		return DefaultMaxPixels
	}
	return maxPixels
}

func decodeBytes(path string, b []byte, maxPixels int) (image.Image, error) {
	maxPixels = pixelCap(maxPixels)
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, &ImageError{Path: path, Item: -1, Err: err}
	}
	if format != "jpeg" && format != "png" { // decoders other packages register (gif, tiff, ...)
		return nil, &ImageError{Path: path, Item: -1, Err: fmt.Errorf("%w: %s content (only JPEG and PNG are read)", image.ErrFormat, format)}
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, &ImageError{Path: path, Item: -1, Err: fmt.Errorf("%s of size %dx%d", format, cfg.Width, cfg.Height)}
	}
	if int64(cfg.Width)*int64(cfg.Height) > int64(maxPixels) {
		return nil, &ImageError{Path: path, Item: -1, Err: fmt.Errorf("%w: %s of %dx%d = %.1f megapixels, over the cap of %.1f",
			ErrTooLarge, format, cfg.Width, cfg.Height, float64(cfg.Width)*float64(cfg.Height)/1e6, float64(maxPixels)/1e6)}
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, &ImageError{Path: path, Item: -1, Err: fmt.Errorf("%s: %w", format, err)}
	}
	return img, nil
}

// TensorBytes decodes the JPEG or PNG image b (the bytes of a file; name identifies it in
// errors) and writes its tensor into dst, exactly as TensorFile does for a file holding b. Images
// over p.MaxPixels are refused from their header, before any pixel is decoded (ErrTooLarge).
// Errors are *ImageError values naming name.
func (p Preprocess) TensorBytes(name string, b []byte, dst []float32) error {
	if err := p.Validate(); err != nil {
		return err
	}
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	return s.encoded(p, name, b, dst)
}

// scratchPool keeps TensorBytes' decoding buffers between calls (a server decodes one image per
// request, from many goroutines).
var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// Tensor writes the (3, Height, Width) float32 tensor of img into dst (len(dst) must be p.Size()),
// channel-major (the NCHW layout of one image). Grayscale, paletted, CMYK, 16-bit and alpha images
// become RGB; alpha is dropped (straight, not premultiplied, colour values are used, as PIL's
// convert("RGB") does).
func (p Preprocess) Tensor(img image.Image, dst []float32) error {
	if err := p.Validate(); err != nil {
		return err
	}
	var s scratch
	return s.tensor(p, img, dst)
}

// TensorFile decodes the file (see DecodeFile, with p.MaxPixels) and writes its tensor into dst.
func (p Preprocess) TensorFile(path string, dst []float32) error {
	if err := p.Validate(); err != nil {
		return err
	}
	var s scratch
	return s.file(p, path, dst)
}
