//go:build !cgo || noopenblas

package matmul

// Kernel names the kernel ABt runs: "go" in builds without OpenBLAS.
func Kernel() string { return "go" }

// abt is the portable kernel: one dot product per element with four partial sums, rows of B in
// blocks of 4 so that each row of A is read once per block.
func abt(c []float32, ldc int, a []float32, m int, b []float32, n, k int) {
	for i := range m {
		ai := a[i*k : (i+1)*k]
		ci := c[i*ldc : i*ldc+n]
		for j := range n {
			bj := b[j*k : (j+1)*k]
			var s0, s1, s2, s3 float32
			p := 0
			for ; p+4 <= k; p += 4 {
				s0 += ai[p] * bj[p]
				s1 += ai[p+1] * bj[p+1]
				s2 += ai[p+2] * bj[p+2]
				s3 += ai[p+3] * bj[p+3]
			}
			for ; p < k; p++ {
				s0 += ai[p] * bj[p]
			}
			ci[j] = (s0 + s1) + (s2 + s3)
		}
	}
}
