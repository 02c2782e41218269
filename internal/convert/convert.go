// Package convert converts slices between float64 and float32: the head keeps its weights in
// float64 (the optimizer's precision) and runs its products in float32, converting 655,360
// weights and as many gradients every step. With cgo on amd64 CPUs with AVX the conversions run
// four values per instruction (convert.c, about 3x faster than the Go loop, which is memory
// bound at about 1.2 ns per value here); elsewhere they are Go loops. Both round to nearest
// even, so the results are the same bit for bit.
package convert

// F64ToF32 sets dst[i] = float32(src[i]) for every i of src; dst must be at least as long.
func F64ToF32(dst []float32, src []float64) {
	dst = dst[:len(src)]
	if len(src) >= minSIMD && f64ToF32(dst, src) {
		return
	}
	for i, v := range src {
		dst[i] = float32(v)
	}
}

// F32ToF64 sets dst[i] = float64(src[i]) for every i of src; dst must be at least as long.
func F32ToF64(dst []float64, src []float32) {
	dst = dst[:len(src)]
	if len(src) >= minSIMD && f32ToF64(dst, src) {
		return
	}
	for i, v := range src {
		dst[i] = float64(v)
	}
}

// minSIMD is the length below which the Go loop beats the cost of a cgo call.
const minSIMD = 256
