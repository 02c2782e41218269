//go:build !cgo || nolibjpeg

package data

// Built without libjpeg-turbo (tag nolibjpeg, or without cgo): JPEGs are decoded by image/jpeg and
// resampled in Go.

// jpegDecoder names this build's JPEG decoder in Preprocess.Key.
const jpegDecoder = "go"

// decodeJPEG always declines: image/jpeg decodes every JPEG.
func (s *scratch) decodeJPEG([]byte, int) (int, int, bool) { return 0, 0, false }

// resampleRGB is resampleGo.
func resampleRGB(s *scratch, sw, ow, oh int, nm *norm, dst []float32) {
	resampleGo(s, sw, ow, oh, nm, dst)
}
