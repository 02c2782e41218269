package pipeline

import (
	"fmt"

	"github.com/grouploss/pipeline/pipeline/metrics"
)

// validationSet is what the best epoch is selected on and the export chosen with (chooseExport):
// each image of the validation classes queries the images of the validation classes and as many
// images of the classes trained on (distractors), and the score is the MAP@R of those queries.
//
// Why this score: MAP@R uses every relevant image of a query (R = its class's images - 1), so
// with a few validation classes it still averages hundreds of ranked lists, where R@1 moves in
// steps and saturates on easy data. The distractors make it informative with 2 validation
// classes: among the validation images alone, 2 classes only have to be told apart from each
// other, and a model that collapses what it did not train on still separates them (Fashion-MNIST
// in the README: the centered PCA start scored above the raw features there and lost 11 NMI
// points on the evaluated classes). Against images of the trained classes, an unseen class must
// stay apart from what training pulled together, as the evaluated classes must.
type validationSet struct {
	items   []int // dataset items: the validation images (the queries), then the distractors
	labels  []int
	queries int
}

// validationSet returns the run's validation set: the validation images, then up to as many
// training images, spread evenly over the classes trained on (the first of each class).
func (r *runner) validationSet() validationSet {
	s := r.split
	v := validationSet{items: append([]int(nil), s.valIdx...), queries: len(s.valIdx)}
	if len(s.fit) > 0 {
		per := (len(s.valIdx) + len(s.fit) - 1) / len(s.fit)
		taken := map[int]int{}
		for _, i := range s.fitIdx {
			if l := r.ds.Items[i].Label; taken[l] < per {
				taken[l]++
				v.items = append(v.items, i)
			}
		}
	}
	v.labels = r.ds.Labels(v.items)
	return v
}

// describe names the score for metrics.json.
func (v validationSet) describe(valClasses int) string {
	return fmt.Sprintf("map_at_r of the %d images of the %d validation classes among them and %d images of the trained classes",
		v.queries, valClasses, len(v.items)-v.queries)
}

// score is the MAP@R of the queries of emb (the embeddings of v.items, dim values each).
func (v validationSet) score(emb []float32, dim int) (metrics.Result, error) {
	return metrics.Evaluate(emb, len(v.items), dim, v.labels, metrics.Options{SkipClustering: true, Queries: v.queries})
}
