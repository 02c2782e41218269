package tune

import (
	"math/rand/v2"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/stat/distmv"
	"gonum.org/v1/gonum/stat/samplemv"
)

// Points returns the parameter values of the first n trials, in Params order: the first n
// points of a Halton sequence over the unit cube scrambled with seed (Owen's randomization),
// mapped through each parameter's quantile (Param.Value). Point i is the same for any n > i.
func (s *Space) Points(n int, seed uint64) [][]any {
	d := len(s.Params)
	if n <= 0 {
		return nil
	}
	u := mat.NewDense(n, d, nil)
	samplemv.Halton{Kind: samplemv.Owen, Q: distmv.NewUnitUniform(d, nil),
		Src: rand.NewPCG(seed, 0x5eed7e57)}.Sample(u)
	out := make([][]any, n)
	for i := range out {
		out[i] = make([]any, d)
		for j, p := range s.Params {
			out[i][j] = p.Value(u.At(i, j))
		}
	}
	return out
}
