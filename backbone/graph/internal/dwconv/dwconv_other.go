//go:build !cgo || !amd64

package dwconv

// Supported is false: without cgo on amd64 there are no kernels here, and the functions only
// report that they did nothing.
const Supported = false

func Forward(x, w, y []float32, s *Shape, lo, hi int) bool { return false }
func BackX(dx, w, gy []float32, s *Shape, lo, hi int) bool { return false }
func BackW(x, dw, gy []float32, s *Shape, lo, hi int) bool { return false }
