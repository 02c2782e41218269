package data

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

// testHookDecoded, when set by a test, is called after each image is decoded.
var testHookDecoded func(item int)

// Batch is a run of consecutive items decoded into one tensor.
type Batch struct {
	Start   int           // position in the requested items of the batch's first item
	N       int           // rows in Data: the batch's items minus the skipped ones
	Data    []float32     // (N, 3, Height, Width) float32, NCHW; owned by the receiver (see Release)
	Items   []int         // the N rows' indices into Dataset.Items, in order
	Skipped []*ImageError // with SkipBad: the batch's files that failed to decode, in order
	Err     error         // set on the last batch sent when decoding fails (a *ImageError) or the request is invalid
}

// dataPool recycles batch buffers handed back with Batch.Release.
var dataPool sync.Pool // of *[]float32

// getData returns a slice of n floats with unspecified contents, recycled when possible.
func getData(n int) []float32 {
	if v, ok := dataPool.Get().(*[]float32); ok && cap(*v) >= n {
		return (*v)[:n]
	}
	return make([]float32, n)
}

// Release hands b.Data back for reuse by later batches (of any Loader) and clears it. Calling it is
// optional: it saves allocating and zeroing a fresh buffer per batch. Data must not be used after.
func (b *Batch) Release() {
	if cap(b.Data) > 0 {
		d := b.Data[:0]
		dataPool.Put(&d)
	}
	b.Data = nil
}

// Loader decodes images into batches with a pool of goroutines that works ahead of the consumer.
type Loader struct {
	Preprocess Preprocess
	BatchSize  int  // items per batch (the last one may be shorter); must be positive
	Workers    int  // decoding goroutines; <= 0 means runtime.GOMAXPROCS(0)
	Prefetch   int  // batches decoded ahead of the one the consumer holds; <= 0 means 2
	SkipBad    bool // leave undecodable files out of Data and list them in Batch.Skipped instead of failing
}

// Batches is Loader{Preprocess: p, BatchSize: batchSize, Workers: workers}.Batches(ctx, ds, items).
func Batches(ctx context.Context, ds *Dataset, items []int, p Preprocess, batchSize, workers int) <-chan Batch {
	return Loader{Preprocess: p, BatchSize: batchSize, Workers: workers}.Batches(ctx, ds, items)
}

// Batches decodes ds.Items[items[i]] for every i, BatchSize at a time, and sends the batches in order
// on the returned channel, which is closed after the last one. Workers decode up to Prefetch batches
// ahead, so the consumer's work overlaps the decoding.
//
// The first failure (a bad file without SkipBad, or invalid settings) is sent as a Batch with Err set
// and ends the stream. Cancelling ctx stops the workers and closes the channel early without an
// error batch: check ctx.Err() after the loop. A consumer that stops reading before the channel is
// closed must cancel ctx; every goroutine has exited by the time the channel is closed.
func (l Loader) Batches(ctx context.Context, ds *Dataset, items []int) <-chan Batch {
	out := make(chan Batch)
	if err := l.check(ds, items); err != nil {
		go func() {
			defer close(out)
			select {
			case out <- Batch{Err: err}:
			case <-ctx.Done():
			}
		}()
		return out
	}
	workers := l.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	prefetch := l.Prefetch
	if prefetch <= 0 {
		prefetch = 2
	}
	ctx, cancel := context.WithCancel(ctx)
	size := l.Preprocess.Size()

	type pending struct {
		b    Batch
		errs []*ImageError // per position, nil when decoded
		left atomic.Int32
		done chan struct{}
	}
	type job struct {
		pb  *pending
		pos int // position in the batch
	}
	slots := make(chan struct{}, prefetch) // batches being decoded or waiting for the consumer
	order := make(chan *pending, prefetch)
	jobs := make(chan job)
	var wg sync.WaitGroup

	wg.Add(1)
	go func() { // producer: hands out batches in order while slots are free
		defer wg.Done()
		defer close(jobs)
		defer close(order)
		for start := 0; start < len(items); start += l.BatchSize {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			n := min(l.BatchSize, len(items)-start)
			pb := &pending{
				b:    Batch{Start: start, N: n, Data: getData(n * size), Items: items[start : start+n : start+n]},
				errs: make([]*ImageError, n),
				done: make(chan struct{}),
			}
			pb.left.Store(int32(n))
			order <- pb // never blocks: order has as much room as slots
			for pos := range n {
				select {
				case jobs <- job{pb, pos}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s scratch
			for j := range jobs {
				pb := j.pb
				if ctx.Err() == nil {
					item := pb.b.Items[j.pos]
					path := ds.Resolve(item)
					if err := s.file(l.Preprocess, path, pb.b.Data[j.pos*size:(j.pos+1)*size]); err != nil {
						var ie *ImageError
						if !errors.As(err, &ie) {
							ie = &ImageError{Path: path, Err: err}
						}
						ie.Item = item
						pb.errs[j.pos] = ie
					}
					if testHookDecoded != nil {
						testHookDecoded(item)
					}
				}
				if pb.left.Add(-1) == 0 {
					close(pb.done)
				}
			}
		}()
	}

	go func() { // emitter: sends finished batches in order
		defer func() {
			cancel()
			wg.Wait()
			close(out)
		}()
		for pb := range order {
			select {
			case <-pb.done:
			case <-ctx.Done():
				return
			}
			b, fatal := l.finish(pb.b, pb.errs, size)
			select {
			case out <- b:
			case <-ctx.Done():
				return
			}
			if fatal {
				return
			}
			<-slots
		}
	}()
	return out
}

// finish turns a decoded batch into what is sent: with SkipBad, bad rows are removed; without, the
// first bad file becomes the batch's error.
func (l Loader) finish(b Batch, errs []*ImageError, size int) (Batch, bool) {
	bad := 0
	for _, e := range errs {
		if e != nil {
			if !l.SkipBad {
				return Batch{Start: b.Start, Err: e}, true
			}
			bad++
		}
	}
	if bad == 0 {
		return b, false
	}
	keep := make([]int, 0, b.N-bad)
	w := 0
	for pos, e := range errs {
		if e != nil {
			b.Skipped = append(b.Skipped, e)
			continue
		}
		if w != pos {
			copy(b.Data[w*size:(w+1)*size], b.Data[pos*size:(pos+1)*size])
		}
		keep = append(keep, b.Items[pos])
		w++
	}
	b.N, b.Items, b.Data = w, keep, b.Data[:w*size]
	return b, false
}

func (l Loader) check(ds *Dataset, items []int) error {
	if err := l.Preprocess.Validate(); err != nil {
		return err
	}
	if l.BatchSize <= 0 {
		return fmt.Errorf("data: batches: batch size %d, want > 0", l.BatchSize)
	}
	if ds == nil {
		return errors.New("data: batches: nil dataset")
	}
	for i, it := range items {
		if it < 0 || it >= len(ds.Items) {
			return fmt.Errorf("data: batches: items[%d] = %d out of range [0, %d)", i, it, len(ds.Items))
		}
	}
	return nil
}

// Each calls fn with every batch of Batches(ctx, ds, items), in order, and returns the first error:
// a batch's Err, fn's error, or ctx.Err() (wrapped) when cancelled before the end. Every batch has
// its own Data, which fn may keep. When Each returns, all its goroutines have exited.
func (l Loader) Each(ctx context.Context, ds *Dataset, items []int, fn func(b Batch) error) error {
	inner, cancel := context.WithCancel(ctx)
	ch := l.Batches(inner, ds, items)
	defer func() {
		cancel()
		for range ch { // wait for the workers to exit
		}
	}()
	seen := 0
	for b := range ch {
		if b.Err != nil {
			return b.Err
		}
		seen += b.N + len(b.Skipped)
		if err := fn(b); err != nil {
			return err
		}
	}
	if seen < len(items) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("data: batches: %w", err)
		}
		return fmt.Errorf("data: batches: stream ended after %d of %d items", seen, len(items))
	}
	return nil
}
