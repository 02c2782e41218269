//go:build !cgo || !amd64

package convert

func f64ToF32([]float32, []float64) bool { return false }
func f32ToF64([]float64, []float32) bool { return false }
