package train

import (
	"fmt"

	"github.com/grouploss/pipeline/internal/lapack"
	"github.com/grouploss/pipeline/internal/matmul"
	"github.com/grouploss/pipeline/internal/rowops"
	"gonum.org/v1/gonum/blas"
)

// PCA returns the top k principal directions of the n x d row-major matrix x as a k x d row-major
// matrix (rows are unit vectors, by decreasing variance) and the column means (length d).
// With center false the directions are those of the second-moment matrix x^T x / n (PCA about the
// origin): the mean direction is kept, which preserves the cosine geometry of non-negative
// features such as pooled ReLU activations; mean is then all zeros.
// The sign of each direction is fixed so that its largest-magnitude entry is positive, which makes
// the result deterministic.
func PCA(x []float32, n, d, k int, center bool) (components []float64, mean []float64, err error) {
	if n < 2 || d < 1 || len(x) != n*d {
		return nil, nil, fmt.Errorf("train: PCA needs an n x d matrix with n >= 2, got n=%d d=%d len=%d", n, d, len(x))
	}
	if k < 1 || k > d {
		return nil, nil, fmt.Errorf("train: PCA of %d dimensions to %d components is impossible", d, k)
	}
	mean = make([]float64, d)
	if center {
		mean = rowops.ColumnMean(x[:n*d], d)
	}
	c := make([]float64, n*d)
	for i := 0; i < n; i++ {
		for j := 0; j < d; j++ {
			c[i*d+j] = float64(x[i*d+j]) - mean[j]
		}
	}
	// cov = cᵀc / (n−1), both triangles, on OpenBLAS's dgemm.
	cov := make([]float64, d*d)
	matmul.BLAS{}.Dgemm(blas.Trans, blas.NoTrans, d, d, n, 1/float64(n-1), c, d, c, d, 0, cov, d)
	_, vecs, err := lapack.SymEigTop(cov, d, k)
	if err != nil {
		return nil, nil, fmt.Errorf("train: PCA of the %d x %d covariance: %w", d, d, err)
	}
	components = vecs
	for r := 0; r < k; r++ {
		row := components[r*d : (r+1)*d]
		big, sign := 0.0, 1.0
		for _, v := range row {
			if a := max(v, -v); a > big {
				big = a
				if v < 0 {
					sign = -1
				} else {
					sign = 1
				}
			}
		}
		for j := range row {
			row[j] *= sign
		}
	}
	return components, mean, nil
}
