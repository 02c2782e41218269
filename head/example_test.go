package head_test

import (
	"fmt"
	"math/rand"

	"github.com/grouploss/pipeline/head"
)

// A head on 8-d features: one Group Loss training step on a batch of 2 classes x 3 samples, then
// the embeddings of the batch.
func Example() {
	h, err := head.New(head.Config{In: 8, Emb: 4, Classes: 5, DType: head.Float64}, rand.New(rand.NewSource(1)))
	if err != nil {
		panic(err)
	}
	for _, p := range h.Params() {
		fmt.Println(p.Name, p.Shape)
	}
	const n = 6
	x := make([]float32, n*8)
	for i := range x {
		x[i] = float32((i*7)%11) / 11
	}
	labels := []int{3, 3, 3, 1, 1, 1}
	fmt.Println("anchors:", head.Anchors(labels, 2))
	res, err := h.Step(x, n, labels, nil, head.DefaultGroupLoss())
	if err != nil {
		panic(err)
	}
	fmt.Printf("loss %.3f = nll %.3f + ce %.3f\n", res.Loss, res.NLL, res.CE)
	emb := make([]float32, n*4)
	h.Embed(x, n, emb)
	fmt.Println("embeddings:", len(emb)/4, "x", 4)
	// Output:
	// emb.weight [4 8]
	// emb.bias [4]
	// cls.weight [5 4]
	// cls.bias [5]
	// anchors: [true true false true true false]
	// loss 2.001 = nll 0.327 + ce 1.673
	// embeddings: 6 x 4
}
