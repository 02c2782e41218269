//go:build cgo && amd64

package matmul

import "testing"

// forEachKernel runs f with ABt bound to each kernel this CPU can run.
func forEachKernel(t *testing.T, f func(t *testing.T, abt func(c []float32, ldc int, a []float32, m int, b []float32, n, k int))) {
	for _, i := range runnable() {
		name := map[int]string{1: "sse2", 2: "avx2", 3: "avx512"}[int(i)]
		t.Run(name, func(t *testing.T) {
			f(t, func(c []float32, ldc int, a []float32, m int, b []float32, n, k int) { abtWith(i, c, ldc, a, m, b, n, k) })
		})
	}
}
