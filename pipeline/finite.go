package pipeline

import (
	"fmt"
	"math"

	"github.com/grouploss/pipeline/pipeline/train"
)

// NonFiniteError reports a NaN or Inf in a tensor that a step of the run computed. It wraps
// train.ErrNonFinite (exit code 3 of `pipeline run`).
type NonFiniteError struct {
	Step     string  // the step that computed the tensor: "extract"
	Tensor   string  // e.g. the backbone's feature tensor
	Value    float32 // the first non-finite value
	Row, Col int     // its position in the step's [rows, cols] output
	Image    string  // the image of the row ("" when unknown)
	Mirrored bool    // the row is the image's horizontal mirror
}

func (e *NonFiniteError) Error() string {
	what := "image " + fmt.Sprintf("%q", e.Image)
	if e.Mirrored {
		what = "the mirror of " + what
	}
	return fmt.Sprintf("pipeline: %s: %v: tensor %q is %v at row %d, column %d, for %s", e.Step, train.ErrNonFinite,
		e.Tensor, e.Value, e.Row, e.Col, what)
}

func (e *NonFiniteError) Unwrap() error { return train.ErrNonFinite }

// firstNonFinite returns the index of the first NaN or Inf of x, or -1.
func firstNonFinite(x []float32) int {
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return i
		}
	}
	return -1
}

// checkFeatures refuses extracted features (copies x n rows of d, the mirrored copy second)
// holding a NaN or Inf: training on them would only fail later, far from the cause.
func (r *runner) checkFeatures(all []float32, n, d int) error {
	i := firstNonFinite(all)
	if i < 0 {
		return nil
	}
	row, col := i/d, i%d
	item := row % n
	e := &NonFiniteError{Step: "extract", Tensor: r.bb.CutInfo().Feature, Value: all[i], Row: item, Col: col,
		Image: r.ds.Resolve(item), Mirrored: row >= n}
	return withHint(e, "the backbone computes NaN/Inf for this image: check the model (e.g. with `pipeline inspect`) and the preprocessing, or remove the image")
}
