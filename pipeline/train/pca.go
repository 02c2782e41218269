package train

import (
	"fmt"

	"gonum.org/v1/gonum/mat"

	"github.com/grouploss/pipeline/internal/rowops"
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
	c := mat.NewDense(n, d, nil)
	for i := 0; i < n; i++ {
		for j := 0; j < d; j++ {
			c.Set(i, j, float64(x[i*d+j])-mean[j])
		}
	}
	var cov mat.SymDense
	cov.SymOuterK(1/float64(n-1), c.T())
	var eig mat.EigenSym
	if !eig.Factorize(&cov, true) {
		return nil, nil, fmt.Errorf("train: PCA eigen-decomposition of the %d x %d covariance did not converge", d, d)
	}
	var vecs mat.Dense
	eig.VectorsTo(&vecs)
	// Eigenvalues come in ascending order: take the last k columns, largest first.
	components = make([]float64, k*d)
	for r := 0; r < k; r++ {
		col := d - 1 - r
		big, sign := 0.0, 1.0
		for j := 0; j < d; j++ {
			v := vecs.At(j, col)
			if a := max(v, -v); a > big {
				big = a
				if v < 0 {
					sign = -1
				} else {
					sign = 1
				}
			}
		}
		for j := 0; j < d; j++ {
			components[r*d+j] = sign * vecs.At(j, col)
		}
	}
	return components, mean, nil
}
