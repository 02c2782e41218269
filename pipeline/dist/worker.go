package dist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/grouploss/pipeline/pipeline/data"
)

// Embedder computes the embeddings of a dataset's images, in item order, as a (len(ds.Items),
// Dim()) row-major matrix (infer.Embedder).
type Embedder interface {
	EmbedDataset(ctx context.Context, ds *data.Dataset, progress io.Writer) ([]float32, error)
	Dim() int
}

// WorkerConfig configures Work.
type WorkerConfig struct {
	// Model is the hex SHA-256 of the worker's model; batches of another model are handed back.
	Model string
	Embed Embedder
	// Idle ends Work after this long without a batch; 0 works until ctx ends.
	Idle time.Duration
	// Log receives one line per batch and per problem; nil discards them.
	Log io.Writer
}

// WorkerStats counts what Work did.
type WorkerStats struct {
	Batches, Images, Redelivered, Refused int
}

// Work pulls batches from the work stream, embeds them and publishes each result, acking the
// batch only after the results stream has stored the result: a worker that dies before has its
// batch redelivered after the ack wait. It returns when ctx ends (nil) or after cfg.Idle without
// work.
func (q *Queue) Work(ctx context.Context, cfg WorkerConfig) (WorkerStats, error) {
	var st WorkerStats
	logw := cfg.Log
	if logw == nil {
		logw = io.Discard
	}
	var cons jetstream.Consumer
	err := retry(ctx, func(ctx context.Context) error {
		var err error
		cons, err = q.js.CreateOrUpdateConsumer(ctx, WorkStream, jetstream.ConsumerConfig{
			Durable: workerConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: q.ackWait,
			MaxAckPending: -1, MaxDeliver: -1})
		return err
	})
	if err != nil {
		return st, fmt.Errorf("dist: worker consumer: %w", err)
	}
	last := time.Now()
	for ctx.Err() == nil {
		if cfg.Idle > 0 && time.Since(last) > cfg.Idle {
			return st, nil
		}
		wait := 2 * time.Second
		if cfg.Idle > 0 {
			wait = min(wait, max(cfg.Idle-time.Since(last), 100*time.Millisecond))
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
		if err != nil {
			// The server is restarting or unreachable: the connection reconnects by itself.
			fmt.Fprintf(logw, "worker: fetch: %v (retrying)\n", err)
			sleep(ctx, time.Second)
			continue
		}
		for m := range batch.Messages() {
			last = time.Now()
			if err := q.handle(ctx, m, cfg, &st, logw); err != nil {
				return st, err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
			fmt.Fprintf(logw, "worker: fetch: %v (retrying)\n", err)
			sleep(ctx, time.Second)
		}
	}
	return st, nil
}

// handle embeds one batch message and publishes its result, then acks it.
func (q *Queue) handle(ctx context.Context, m jetstream.Msg, cfg WorkerConfig, st *WorkerStats, logw io.Writer) error {
	var w Work
	if err := json.Unmarshal(m.Data(), &w); err != nil || w.Job == "" || len(w.Items) == 0 {
		// Not a batch of ours: redelivering it would only fail again.
		fmt.Fprintf(logw, "worker: dropping malformed message on %s: %v\n", m.Subject(), err)
		return m.Term()
	}
	var delivery uint64 = 1
	if md, err := m.Metadata(); err == nil {
		delivery = md.NumDelivered
	}
	if w.Model != cfg.Model {
		// Another model's job: leave it to a worker that has that model.
		st.Refused++
		fmt.Fprintf(logw, "worker: job %s batch %d wants model sha256 %.12s…, this worker has %.12s…: handed back\n",
			w.Job, w.Batch, w.Model, cfg.Model)
		return m.NakWithDelay(q.ackWait)
	}
	// Tell the server the batch is in progress while it is embedded, so a slow batch is not
	// redelivered; a killed worker stops these and its batch is redelivered after the ack wait.
	hctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		t := time.NewTicker(q.ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				m.InProgress()
			}
		}
	}()
	start := time.Now()
	fmt.Fprintf(logw, "worker %s: job %s batch %d: started (delivery %d)\n", q.name, w.Job, w.Batch, delivery)
	ds := &data.Dataset{Items: make([]data.Item, len(w.Items)), Classes: []string{""}}
	for i, it := range w.Items {
		ds.Items[i] = data.Item{Path: it.Path}
	}
	res := Result{Job: w.Job, Batch: w.Batch, Model: w.Model, Worker: q.name, Delivery: delivery, Items: w.Items, Dim: cfg.Embed.Dim()}
	emb, err := cfg.Embed.EmbedDataset(hctx, ds, nil)
	switch {
	case ctx.Err() != nil:
		// Stopping: the batch is redelivered to another worker.
		m.Nak()
		return nil
	case err != nil:
		// An image that does not decode fails the same way everywhere: report it to the collector.
		res.Error = err.Error()
	default:
		res.Embeddings = emb
	}
	if _, err := q.publish(ctx, resultSubject+"."+w.Job, msgID(w.Job, w.Batch), res); err != nil {
		// Not acked: the batch is redelivered.
		return err
	}
	stop()
	if err := retry(ctx, func(ctx context.Context) error { return m.DoubleAck(ctx) }); err != nil {
		// The result is stored; a redelivery only makes a duplicate result, which is dropped.
		fmt.Fprintf(logw, "worker: ack job %s batch %d: %v\n", w.Job, w.Batch, err)
	}
	st.Batches++
	st.Images += len(w.Items)
	if delivery > 1 {
		st.Redelivered++
	}
	fmt.Fprintf(logw, "worker %s: job %s batch %d: done, %d images in %.2fs (delivery %d)\n",
		q.name, w.Job, w.Batch, len(w.Items), time.Since(start).Seconds(), delivery)
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
