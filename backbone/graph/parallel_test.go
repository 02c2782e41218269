package graph

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/grouploss/pipeline/internal/parallel"
)

// TestParallelMatchesSerial runs every gradient case (float32) on a batch large enough for the
// kernels to split their work over goroutines, with GOMAXPROCS 1 and 4, and checks that the
// outputs and all gradients are the same bits: the kernels split only over independent
// elements, never a sum. Each runs two steps, the second on buffers recycled from the first.
func TestParallelMatchesSerial(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	// Cases whose constants fix the batch size.
	fixed := map[string]bool{"Gemm transA transB alpha beta C row": true, "Concat input, input, constant": true}
	for ci, c := range gradCases() {
		if fixed[c.name] {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			opts := Options{To: "y", Trainable: true}
			for _, n := range sortedKeys(c.inputs) {
				opts.From = append(opts.From, n)
			}
			// Scale the batch so that the first input has at least 2·parallel.MinWork values.
			first := c.inputs[opts.From[0]]
			scale := (2*parallel.MinWork + numel(first) - 1) / numel(first)
			batch := first[0] * scale
			inputs := map[string][]int{}
			for n, dims := range c.inputs {
				inputs[n] = append([]int{batch}, dims[1:]...)
			}
			run := func(procs int) [][]float32 {
				runtime.GOMAXPROCS(procs)
				r := rand.New(rand.NewPCG(uint64(ci), 11))
				p, err := decodePlan(testModel(c.opset, inputs, c.inits(r), c.nodes...), opts)
				if err != nil {
					t.Fatal(err)
				}
				g := &Graph{p: p, runs: map[int]*inferRun{}}
				st, err := newStepper[float32](g, batch)
				if err != nil {
					t.Fatal(err)
				}
				var got [][]float32
				var gy []float32
				for s := 0; s < 2; s++ {
					xs := make([][]float32, len(opts.From))
					for i, n := range opts.From {
						xs[i] = float32s(randFloats(r, numel(inputs[n]), 1))
					}
					y, gx, err := st.step(xs, gy)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, y)
					got = append(got, gx...)
					for _, q := range p.params {
						got = append(got, float32s(q.Grad))
					}
					gy = float32s(randFloats(r, len(y), 1))
				}
				return got
			}
			serial, par := run(1), run(4)
			for i := range serial {
				for j := range serial[i] {
					if math.Float32bits(serial[i][j]) != math.Float32bits(par[i][j]) {
						t.Fatalf("result %d [%d]: %g with GOMAXPROCS 4, %g with 1", i, j, par[i][j], serial[i][j])
					}
				}
			}
		})
	}
}

func float32s(v []float64) []float32 {
	r := make([]float32, len(v))
	for i, x := range v {
		r[i] = float32(x)
	}
	return r
}
