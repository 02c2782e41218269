package head

import (
	"gorgonia.org/gorgonia"

	"github.com/grouploss/pipeline/internal/matmul"
)

// The matrix products of the Group Loss's graph (the classifier's logits, the Pearson
// similarities and their gradients) run through gorgonia's BLAS, gonum's pure-Go one unless told
// otherwise: matmul.BLAS puts them on OpenBLAS. Set once for the process, before any graph runs.
func init() { gorgonia.Use(matmul.BLAS{}) }
