package dist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// CollectSummary counts what Collect read.
type CollectSummary struct {
	Results     int // result messages read
	Duplicates  int // results of a batch already collected (a redelivered batch), dropped
	Redelivered int // kept results whose batch had been delivered more than once
	Workers     map[string]int
}

// Collect reads the job's results until every image has its embedding and returns them in job
// order, an (len(j.Items), dim) row-major matrix. Results are keyed by image: a second result
// for the same batch is dropped. A result of another model, a batch that does not match the
// job, or a worker's error (an image that does not decode) is an error. progress, when not nil,
// receives a line per result. It waits for missing results until ctx ends.
func (q *Queue) Collect(ctx context.Context, j Job, progress io.Writer) (emb []float32, dim int, s CollectSummary, err error) {
	s.Workers = map[string]int{}
	var cons jetstream.Consumer
	err = retry(ctx, func(ctx context.Context) error {
		var err error
		cons, err = q.js.OrderedConsumer(ctx, ResultStream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{resultSubject + "." + j.ID}, DeliverPolicy: jetstream.DeliverAllPolicy})
		return err
	})
	if err != nil {
		return nil, 0, s, fmt.Errorf("dist: collect job %s: %w", j.ID, err)
	}
	have := make([]bool, len(j.Items))
	missing := len(j.Items)
	for missing > 0 {
		if err := ctx.Err(); err != nil {
			return nil, 0, s, fmt.Errorf("dist: collect job %s: %d of %d images still missing: %w (are workers running? `pipeline worker --queue ...`)",
				j.ID, missing, len(j.Items), err)
		}
		batch, err := cons.Fetch(64, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			if progress != nil {
				fmt.Fprintf(progress, "collect: fetch: %v (retrying)\n", err)
			}
			sleep(ctx, time.Second)
			continue
		}
		for m := range batch.Messages() {
			var r Result
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				return nil, 0, s, fmt.Errorf("dist: collect job %s: malformed result on %s: %w", j.ID, m.Subject(), err)
			}
			s.Results++
			if err := checkResult(j, r, dim); err != nil {
				return nil, 0, s, err
			}
			if emb == nil {
				dim = r.Dim
				emb = make([]float32, len(j.Items)*dim)
			}
			fresh := 0
			for k, it := range r.Items {
				if have[it.Index] {
					continue
				}
				have[it.Index] = true
				fresh++
				copy(emb[it.Index*dim:(it.Index+1)*dim], r.Embeddings[k*dim:(k+1)*dim])
			}
			if fresh == 0 {
				s.Duplicates++
				continue
			}
			missing -= fresh
			s.Workers[r.Worker]++
			if r.Delivery > 1 {
				s.Redelivered++
			}
			if progress != nil {
				fmt.Fprintf(progress, "collect: batch %d from %s (delivery %d): %d of %d images\n",
					r.Batch, r.Worker, r.Delivery, len(j.Items)-missing, len(j.Items))
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && progress != nil {
			fmt.Fprintf(progress, "collect: fetch: %v (retrying)\n", err)
		}
	}
	return emb, dim, s, nil
}

// checkResult checks that r belongs to j: its model, its images and its shape.
func checkResult(j Job, r Result, dim int) error {
	switch {
	case r.Error != "":
		return fmt.Errorf("dist: job %s batch %d (worker %s): %s", j.ID, r.Batch, r.Worker, r.Error)
	case r.Model != j.Model:
		return fmt.Errorf("dist: job %s batch %d: result of model sha256 %.12s…, the job's model is %.12s…", j.ID, r.Batch, r.Model, j.Model)
	case r.Dim < 1 || (dim != 0 && r.Dim != dim):
		return fmt.Errorf("dist: job %s batch %d: %d-d embeddings, want %d", j.ID, r.Batch, r.Dim, dim)
	case len(r.Embeddings) != len(r.Items)*r.Dim:
		return fmt.Errorf("dist: job %s batch %d: %d values for %d images of dim %d", j.ID, r.Batch, len(r.Embeddings), len(r.Items), r.Dim)
	}
	for _, it := range r.Items {
		if it.Index < 0 || it.Index >= len(j.Items) || j.Items[it.Index].Path != it.Path {
			return fmt.Errorf("dist: job %s batch %d: image %d %q is not in the job", j.ID, r.Batch, it.Index, it.Path)
		}
	}
	return nil
}
