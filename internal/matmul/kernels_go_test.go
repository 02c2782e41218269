//go:build !cgo || !amd64

package matmul

import "testing"

func forEachKernel(t *testing.T, f func(t *testing.T, abt func(c []float32, ldc int, a []float32, m int, b []float32, n, k int))) {
	t.Run("go", func(t *testing.T) { f(t, abt) })
}
