package dist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The streams and subjects of the queue. Work messages go to workSubject.<job> on a work-queue
// stream (each message is removed once a worker acks it); results go to resultSubject.<job> on a
// stream that keeps them until the coordinator has collected them (or MaxAge passes).
const (
	WorkStream     = "PIPELINE_WORK"
	ResultStream   = "PIPELINE_RESULTS"
	workSubject    = "pipeline.work"
	resultSubject  = "pipeline.results"
	workerConsumer = "pipeline-workers"
	// dupWindow is how long the server remembers message IDs: a job submitted twice within it is
	// queued once, a batch's result published twice (a redelivery) is stored once.
	dupWindow = 24 * time.Hour
	// resultMaxAge bounds how long uncollected results are kept.
	resultMaxAge = 7 * 24 * time.Hour
	// retryFor is how long a publish or an ack is retried while the server is unreachable (a
	// restart), before the operation fails.
	retryFor = 2 * time.Minute
)

// Options configure a Queue connection.
type Options struct {
	// AckWait is how long a worker may hold a batch without acking it (or signalling progress)
	// before the server redelivers it to another worker. 0 means 30s.
	AckWait time.Duration
	// Name names the client in the server's monitoring and in the results a worker publishes.
	Name string
}

// Queue is a connection to a NATS server with JetStream, with the queue's streams in place.
type Queue struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	ackWait time.Duration
	name    string
}

// Connect connects to the NATS server at url (nats://host:port) and creates or updates the work
// and result streams (file storage, so they survive a server restart). The connection
// reconnects forever: a restarted server is picked up again.
func Connect(ctx context.Context, url string, o Options) (*Queue, error) {
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	nc, err := nats.Connect(url, nats.Name(o.Name), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(false))
	if err != nil {
		return nil, fmt.Errorf("dist: queue %s: %w (is nats-server running there with JetStream, -js?)", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("dist: queue %s: %w", url, err)
	}
	q := &Queue{nc: nc, js: js, ackWait: o.AckWait, name: o.Name}
	streams := []jetstream.StreamConfig{
		{Name: WorkStream, Subjects: []string{workSubject + ".>"}, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Duplicates: dupWindow},
		{Name: ResultStream, Subjects: []string{resultSubject + ".>"}, Retention: jetstream.LimitsPolicy,
			Storage: jetstream.FileStorage, Duplicates: dupWindow, MaxAge: resultMaxAge},
	}
	for _, cfg := range streams {
		if err := retry(ctx, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateStream(ctx, cfg)
			return err
		}); err != nil {
			nc.Close()
			return nil, fmt.Errorf("dist: queue %s: stream %s: %w (is JetStream enabled, nats-server -js?)", url, cfg.Name, err)
		}
	}
	return q, nil
}

// Close closes the connection.
func (q *Queue) Close() { q.nc.Close() }

// publish stores v as JSON on subject with the message ID id, retrying while the server is
// unreachable; it returns once the stream has stored the message. dup reports that the stream
// already held a message with that ID (and dropped this one).
func (q *Queue) publish(ctx context.Context, subject, id string, v any) (dup bool, err error) {
	b, err := json.Marshal(v)
	if err != nil {
		return false, fmt.Errorf("dist: %w", err)
	}
	err = retry(ctx, func(ctx context.Context) error {
		ack, err := q.js.Publish(ctx, subject, b, jetstream.WithMsgID(id))
		if err == nil {
			dup = ack.Duplicate
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("dist: publish %s: %w", subject, err)
	}
	return dup, nil
}

// retry calls f (with a per-attempt timeout) until it succeeds, ctx ends or retryFor passes:
// a NATS server restart makes requests time out or find no responders for a few seconds.
func retry(ctx context.Context, f func(context.Context) error) error {
	deadline := time.Now().Add(retryFor)
	wait := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(actx)
		cancel()
		if err == nil || !transient(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// transient reports errors that a server restart or a lost connection cause.
func transient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionReconnecting)
}
