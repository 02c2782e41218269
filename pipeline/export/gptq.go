package export

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// Weight rounding with error feedback (GPTQ: Frantar et al., "Accurate Post-Training Quantization
// for Generative Pre-trained Transformers", ICLR 2023, after Optimal Brain Quantization). Rounding
// each weight to the nearest step erases every change smaller than half a step, and a tail
// fine-tuned from an int8 backbone changes most of its weights by less than that: on the default
// model 84-100% of the projection Convs' weights rounded back to the source model's integers,
// undoing the fine-tuning there (README, "Deploying"). Rounding the input columns one after the
// other and moving each column's rounding error onto the columns not yet rounded, weighted by the
// inverse second moments of the layer's inputs, keeps the error of W x small instead of the error
// of W, and the sub-step changes survive in the sums.

// Moments accumulates, per tensor, the second moments sum x x^T of its channel vectors: an NCHW
// activation holds one C-vector per image and position. For the input of a 1x1 Conv they are the
// Hessian of the Conv's squared output error in its weights.
type Moments struct {
	sums map[string]*mat.SymDense
}

// NewMoments returns an accumulator for the named tensors and their channel counts.
func NewMoments(channels map[string]int) *Moments {
	m := &Moments{sums: make(map[string]*mat.SymDense, len(channels))}
	for t, c := range channels {
		m.sums[t] = mat.NewSymDense(c, nil)
	}
	return m
}

// Observe adds the channel vectors of x, batch images of tensor t in NCHW order. Observe may run
// concurrently for different tensors.
func (m *Moments) Observe(t string, x []float32, batch int) error {
	s := m.sums[t]
	if s == nil {
		return fmt.Errorf("export: moments: unknown tensor %q", t)
	}
	c := s.SymmetricDim()
	if batch <= 0 || len(x)%(batch*c) != 0 {
		return fmt.Errorf("export: moments: tensor %q: %d values for %d images of %d channels", t, len(x), batch, c)
	}
	hw := len(x) / (batch * c)
	img := make([]float64, c*hw)
	for b := 0; b < batch; b++ {
		for i, v := range x[b*c*hw : (b+1)*c*hw] { // row-major C x HW: one column per position
			img[i] = float64(v)
		}
		s.SymRankK(s, 1, mat.NewDense(c, hw, img))
	}
	return nil
}

// Of returns the accumulated moments of tensor t, or nil for a tensor not accumulated.
func (m *Moments) Of(t string) mat.Symmetric {
	if s := m.sums[t]; s != nil {
		return s
	}
	return nil
}

// QuantizeWeightsGPTQ quantizes the weights w of a linear map ([rows][cols], row-major: one row per
// output channel) symmetrically per row to [-qmax, qmax] with QuantizeWeights' scales, rounding
// column after column: the rounding error of column c is spread over the columns after it by the
// upper Cholesky factor U of H^-1 (H = h plus 1% of its mean diagonal, for a stable inverse), as
// GPTQ does. h is sum x x^T over the map's inputs x (cols x cols). A column whose input is always
// 0 gets 0 weights.
func QuantizeWeightsGPTQ(w []float32, rows, cols, qmax int, h mat.Symmetric) ([]int8, []float32, error) {
	if len(w) != rows*cols || h == nil || h.SymmetricDim() != cols {
		return nil, nil, fmt.Errorf("export: gptq: %d weights for %dx%d with input moments of another size", len(w), rows, cols)
	}
	_, scales := QuantizeWeights(w, rows, qmax)
	u, dead, err := gptqFactor(h)
	if err != nil {
		return nil, nil, err
	}
	work := make([]float64, len(w))
	for i, v := range w {
		work[i] = float64(v)
	}
	q := make([]int8, len(w))
	ut := u.RawTriangular()
	for c := 0; c < cols; c++ {
		urow := ut.Data[c*ut.Stride : c*ut.Stride+cols] // U[c, :], zero left of the diagonal
		d := urow[c]
		for r := 0; r < rows; r++ {
			s := float64(scales[r])
			row := work[r*cols : (r+1)*cols]
			v := row[c]
			if dead[c] {
				v = 0
			}
			x := min(max(math.RoundToEven(v/s), float64(-qmax)), float64(qmax))
			q[r*cols+c] = int8(x)
			e := (v - x*s) / d
			for j := c + 1; j < cols; j++ {
				row[j] -= e * urow[j]
			}
		}
	}
	return q, scales, nil
}

// gptqFactor returns the upper Cholesky factor U of (h + damping)^-1 = U^T U and the inputs whose
// second moment is 0.
func gptqFactor(h mat.Symmetric) (*mat.TriDense, []bool, error) {
	n := h.SymmetricDim()
	var trace float64
	for i := 0; i < n; i++ {
		trace += h.At(i, i)
	}
	if math.IsNaN(trace) || math.IsInf(trace, 0) {
		return nil, nil, fmt.Errorf("export: gptq: input moments are not finite")
	}
	damp := 0.01 * trace / float64(n)
	if !(damp > 0) {
		damp = 1
	}
	hd := mat.NewSymDense(n, nil)
	hd.CopySym(h)
	dead := make([]bool, n)
	for i := 0; i < n; i++ {
		dead[i] = h.At(i, i) == 0
		hd.SetSym(i, i, h.At(i, i)+damp)
	}
	var chol mat.Cholesky
	if !chol.Factorize(hd) {
		return nil, nil, fmt.Errorf("export: gptq: input moments are not positive definite")
	}
	var inv mat.SymDense
	if err := chol.InverseTo(&inv); err != nil {
		return nil, nil, fmt.Errorf("export: gptq: %w", err)
	}
	var cinv mat.Cholesky
	if !cinv.Factorize(&inv) {
		return nil, nil, fmt.Errorf("export: gptq: the inverse input moments are not positive definite")
	}
	var u mat.TriDense
	cinv.UTo(&u)
	return &u, dead, nil
}
