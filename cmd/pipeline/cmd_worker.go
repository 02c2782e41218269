package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/grouploss/pipeline/pipeline/dist"
	"github.com/grouploss/pipeline/pipeline/gallery"
	"github.com/grouploss/pipeline/pipeline/infer"
)

// workerOptions are the flags of `pipeline worker`.
type workerOptions struct {
	model       string
	onnxruntime string
	batchSize   int
	threads     int
	workers     int
	queue       string
	name        string
	idle        time.Duration
	ackWait     time.Duration
}

func (o *workerOptions) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.model, "model", "", "embedding model `FILE`: the model the jobs were submitted with (checked by SHA-256)")
	onnxruntimeFlag(fs, &o.onnxruntime)
	fs.IntVar(&o.batchSize, "batch-size", 32, "images per onnxruntime run (the --batch-size of the submission gives results identical to `pipeline embed`)")
	threadsFlag(fs, &o.threads)
	fs.IntVar(&o.workers, "workers", 0, "image-decoding goroutines (0: one per CPU)")
	fs.StringVar(&o.queue, "queue", "", "NATS JetStream `URL` of the work queue (nats://host:port)")
	fs.StringVar(&o.name, "name", "", "worker name in the results and logs (default host-pid)")
	fs.DurationVar(&o.idle, "idle", 0, "exit after this long without work (0: work until SIGTERM)")
	fs.DurationVar(&o.ackWait, "ack-wait", 30*time.Second, "how long a batch may go unacknowledged before the queue hands it to another worker (a dead worker's batch)")
}

func cmdWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o workerOptions
	fs := newFlagSet("pipeline worker", stderr, "usage: pipeline worker --queue nats://HOST:PORT --model MODEL.onnx [flags]\n\n"+
		"Pulls batches submitted by `pipeline embed --queue URL --submit` from the JetStream work queue,\n"+
		"embeds them with onnxruntime and publishes the results for `pipeline embed --queue URL --collect`.\n"+
		"A batch is acknowledged only after its result is stored; a batch of a worker that dies is\n"+
		"redelivered after --ack-wait. SIGTERM stops after handing back the batch in progress.\n\n")
	o.addFlags(fs)
	if help, err := parseFlags(fs, args, ""); help || err != nil {
		return err
	}
	switch {
	case o.queue == "" || o.model == "":
		return fmt.Errorf("%w: worker needs --queue and --model", errUsage)
	case o.batchSize < 1:
		return fmt.Errorf("%w: --batch-size %d, want >= 1", errUsage, o.batchSize)
	case o.ackWait < time.Second:
		return fmt.Errorf("%w: --ack-wait %v, want >= 1s", errUsage, o.ackWait)
	}
	if o.name == "" {
		host, _ := os.Hostname()
		o.name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	id, err := gallery.IdentifyModel(o.model)
	if err != nil {
		return err
	}
	e, err := infer.OpenEmbedder(o.model, infer.WithLibraryPath(o.onnxruntime), infer.WithBatchSize(o.batchSize),
		infer.WithThreads(o.threads), infer.WithWorkers(o.workers))
	if err != nil {
		return err
	}
	defer e.Close()
	q, err := dist.Connect(ctx, o.queue, dist.Options{AckWait: o.ackWait, Name: o.name})
	if err != nil {
		return err
	}
	defer q.Close()
	fmt.Fprintf(stderr, "worker %s: model %s (sha256 %.12s…), queue %s\n", o.name, o.model, id.SHA256, o.queue)
	start := time.Now()
	st, err := q.Work(ctx, dist.WorkerConfig{Model: id.SHA256, Embed: e, Idle: o.idle, Log: stderr})
	if err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	fmt.Fprintf(stdout, "worker %s: %d batches, %d images (%d redelivered batches, %d refused) in %.1fs\n",
		o.name, st.Batches, st.Images, st.Redelivered, st.Refused, secs)
	return nil
}
