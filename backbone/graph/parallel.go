package graph

import "github.com/grouploss/pipeline/internal/parallel"

// parallelCopy copies src into dst (at least as long) by parallel.Range.
func parallelCopy[T float](dst, src []T) {
	parallel.Range(len(src), len(src), func(lo, hi int) { copy(dst[lo:hi], src[lo:hi]) })
}
