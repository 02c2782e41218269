package pipeline

import (
	"fmt"

	"github.com/grouploss/pipeline/pipeline/config"
)

// checkMemory refuses, before extraction, a run whose features, head or PCA start would need
// more than the memory budget (memoryNeeds).
func (r *runner) checkMemory(budget int64) error {
	return memoryNeeds(len(r.ds.Items), r.bb.Dim(), r.cfg.Head.EmbeddingDim, r.copies(), r.cfg.Head.Init == "pca", budget)
}

// memoryNeeds checks the memory that n images of d-value features imply (copies of them with
// mirrors), a head of emb outputs and, with pca, its PCA start, against budget bytes: a backbone
// without pooling cut at a 200704-d Flatten made the PCA start allocate 200704^2 float64s.
func memoryNeeds(n, d, emb, copies int, pca bool, budget int64) error {
	gb := func(b float64) string { return fmt.Sprintf("%.1f GB", b/1e9) }
	cut := "cut the backbone at a pooled feature (backbone.feature, see `pipeline inspect`)"
	// Products in float64: n and d come from files and models and may be large.
	fn, fd := float64(n), float64(d)
	for _, c := range []struct {
		ok    bool
		what  string
		bytes float64
		fix   string
	}{
		{true, fmt.Sprintf("the features of %d images x %d values (x%d with mirrors)", n, d, copies), fn * fd * float64(copies) * 4, cut + ", or use fewer images"},
		{true, fmt.Sprintf("a head of %d x %d weights (with gradients and Adam moments)", d, emb), float64(emb) * fd * 4 * 4, cut + ", or lower head.embedding_dim"},
		{pca, fmt.Sprintf("head.init pca on %d-d features (a %d x %d covariance)", d, d, d), (fd*fd + fn*fd) * 8, cut + ", or set head.init random"},
	} {
		if c.ok && c.bytes > float64(budget) {
			return withHint(fmt.Errorf("%w: %s need %s, over the budget of %s (half of this machine's memory)", config.ErrInvalid, c.what, gb(c.bytes), gb(float64(budget))), c.fix)
		}
	}
	return nil
}
