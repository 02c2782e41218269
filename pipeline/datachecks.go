package pipeline

import (
	"fmt"
)

// checkEvalPositives refuses a split whose evaluation classes all have a single image: no query
// then has a positive, Recall@K is 0 and NMI 1.0 whatever the model (the run reported those with
// exit 0).
func checkEvalPositives(counts []int, eval []int, source string) error {
	for _, l := range eval {
		if counts[l] >= 2 {
			return nil
		}
	}
	return withHint(fmt.Errorf("pipeline: each of the %d evaluation classes of %q has a single image: no query has a positive to retrieve, so Recall@K and NMI would mean nothing",
		len(eval), source), "add images to the evaluation classes (at least 2 in one), or pass a smaller --train-classes")
}

// splitWarning returns a warning when the dataset gives items a split (a manifest's split column,
// CUB's train_test_split.txt): the metric-learning protocol splits by class (train_classes), so
// it is not used ("" when no item has one).
func splitWarning(items int, split func(i int) string, source string) string {
	for i := range items {
		if split(i) != "" {
			return fmt.Sprintf("the per-image split of %q (its split column or list) is not used: the protocol splits by class (train_classes)", source)
		}
	}
	return ""
}
