package serve

import (
	"context"
	"errors"
	"sync"
	"time"
)

// errOverloaded is returned by submit when the run queue is full.
var errOverloaded = errors.New("serve: overloaded: the run queue is full")

// model is what the batcher runs: the Embedder's EmbedTensors and its sizes.
type model interface {
	EmbedTensors(in []float32, n int) ([]float32, error)
	Dim() int
}

// job is one request's images, preprocessed, waiting for their embeddings.
type job struct {
	in   []float32 // n x chw
	n    int
	out  []float32 // n x dim, set before done is closed
	err  error
	done chan struct{}
}

// batcher gathers concurrent jobs into one model run of at most maxBatch images: the first job
// waits up to maxWait for others, and jobs that queue while a run is in progress join the next
// one; a lone request does not wait. With batching off every job is its own run (the reference batching is measured against).
// The queue is bounded by the server's admission control, so submit never blocks for long.
type batcher struct {
	m        model
	maxBatch int
	maxWait  time.Duration
	batching bool
	// mayJoin reports whether requests other than the batch's jobs are in flight (nil: assume
	// so): when none is, no job can join and the batch runs without waiting.
	mayJoin func(jobs int) bool
	metrics *metrics
	queue   chan *job
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

func newBatcher(m model, maxBatch int, maxWait time.Duration, batching bool, queue int, mt *metrics) *batcher {
	b := &batcher{m: m, maxBatch: maxBatch, maxWait: maxWait, batching: batching, metrics: mt,
		queue: make(chan *job, queue), stop: make(chan struct{})}
	b.wg.Add(1)
	go b.loop()
	return b
}

// submit queues n preprocessed images and waits for their embeddings (n x Dim). A full queue is
// errOverloaded at once; a cancelled ctx stops the wait (the run still happens).
func (b *batcher) submit(ctx context.Context, in []float32, n int) ([]float32, error) {
	j := &job{in: in, n: n, done: make(chan struct{})}
	select {
	case b.queue <- j:
	default:
		return nil, errOverloaded
	}
	b.metrics.queued.Add(1)
	select {
	case <-j.done:
		return j.out, j.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// close stops the loop after the jobs already queued have run.
func (b *batcher) close() {
	b.once.Do(func() { close(b.stop) })
	b.wg.Wait()
}

func (b *batcher) loop() {
	defer b.wg.Done()
	var carry *job // a job that did not fit in the previous batch
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-b.queue:
			case <-b.stop:
				// Drain what is queued, then stop.
				for {
					select {
					case j := <-b.queue:
						b.run([]*job{j})
					default:
						return
					}
				}
			}
		}
		batch, total := []*job{first}, first.n
		if b.batching {
			timer.Reset(b.maxWait)
		gather:
			for total < b.maxBatch && (b.mayJoin == nil || b.mayJoin(len(batch))) {
				select {
				case j := <-b.queue:
					if total+j.n > b.maxBatch {
						carry = j
						break gather
					}
					batch, total = append(batch, j), total+j.n
				case <-timer.C:
					break gather
				}
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
		b.run(batch)
	}
}

// run computes the embeddings of the batch's jobs in one model run and hands them out.
func (b *batcher) run(batch []*job) {
	total := 0
	for _, j := range batch {
		total += j.n
	}
	b.metrics.queued.Add(-int64(len(batch)))
	in := batch[0].in
	if len(batch) > 1 {
		in = make([]float32, 0, total*len(batch[0].in)/batch[0].n)
		for _, j := range batch {
			in = append(in, j.in...)
		}
	}
	start := time.Now()
	out, err := b.m.EmbedTensors(in, total)
	b.metrics.observeBatch(total, time.Since(start))
	dim, off := b.m.Dim(), 0
	for _, j := range batch {
		if err != nil {
			j.err = err
		} else {
			j.out = out[off*dim : (off+j.n)*dim : (off+j.n)*dim]
		}
		off += j.n
		close(j.done)
	}
}
