package dist

import "context"

// SubmitSummary counts what Submit queued.
type SubmitSummary struct {
	Job        string
	Images     int
	Batches    int
	Duplicates int // batches the stream already held (the same job submitted before)
}

// Submit queues every batch of the job on the work stream, each with a message ID derived from
// the job and the batch, so submitting the same job again within the duplicate window queues
// nothing new. It returns once the stream has stored every batch.
func (q *Queue) Submit(ctx context.Context, j Job) (SubmitSummary, error) {
	s := SubmitSummary{Job: j.ID, Images: len(j.Items), Batches: j.Batches()}
	for b := range j.Batches() {
		dup, err := q.publish(ctx, workSubject+"."+j.ID, msgID(j.ID, b), j.Batch(b))
		if err != nil {
			return s, err
		}
		if dup {
			s.Duplicates++
		}
	}
	return s, nil
}
