package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/dist"
	"github.com/grouploss/pipeline/pipeline/gallery"
)

// distFlags are the flags of `pipeline embed` that spread the work over processes: a JetStream
// work queue (--queue with --submit or --collect) or a static shard (--shard).
type distFlags struct {
	queue   string
	submit  bool
	collect bool
	shard   string
	wait    time.Duration
}

func (d *distFlags) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&d.queue, "queue", "", "NATS JetStream `URL` (nats://host:port) of the work queue: with --submit or --collect; `pipeline worker` does the work")
	fs.BoolVar(&d.submit, "submit", false, "with --queue: queue the images in batches of --batch-size, with the model's SHA-256, and return")
	fs.BoolVar(&d.collect, "collect", false, "with --queue: gather the workers' results into --out, in dataset order (duplicates dropped)")
	fs.StringVar(&d.shard, "shard", "", "embed only part `i/n` of the images sorted by path (0 <= i < n); the parts in order cover them all once")
	fs.DurationVar(&d.wait, "wait", 0, "with --collect: give up after this long without every result (0: wait until interrupted)")
}

func (d *distFlags) active() bool {
	return d.queue != "" || d.submit || d.collect || d.shard != "" || d.wait != 0
}

// cmdEmbedDist is `pipeline embed` with --queue or --shard.
func cmdEmbedDist(ctx context.Context, o embedOptions, stdout, stderr io.Writer) error {
	d := o.dist
	switch {
	case o.model == "" || o.data == "":
		return fmt.Errorf("%w: embed needs --model and --data", errUsage)
	case (d.submit || d.collect || d.wait != 0) && d.queue == "":
		return fmt.Errorf("%w: --submit, --collect and --wait go with --queue nats://HOST:PORT", errUsage)
	case d.queue != "" && d.submit == d.collect:
		return fmt.Errorf("%w: --queue needs one of --submit (queue the work) or --collect (gather the results)", errUsage)
	case d.submit && o.out != "":
		return fmt.Errorf("%w: --submit writes nothing: give --out to the --collect step", errUsage)
	case !d.submit && o.out == "":
		return fmt.Errorf("%w: embed needs --out FILE.npy", errUsage)
	case !d.submit && !strings.EqualFold(filepath.Ext(o.out), ".npy"):
		return fmt.Errorf("%w: --out %q must end in .npy", errUsage, o.out)
	case o.batchSize < 1:
		return fmt.Errorf("%w: --batch-size %d, want >= 1", errUsage, o.batchSize)
	}
	start := time.Now()
	ds, err := o.loadData()
	if err != nil {
		return err
	}
	idx := allItems(len(ds.Items))
	if d.shard != "" {
		s, err := dist.ParseShard(d.shard)
		if err != nil {
			return fmt.Errorf("%w: --shard: %v", errUsage, err)
		}
		idx = s.Items(ds)
	}
	sub := dist.Subset(ds, idx)
	if d.queue == "" {
		emb, dim, err := o.embedDataset(ctx, sub, stderr)
		if err != nil {
			return err
		}
		return reportEmbed(stdout, o.out, o.model, sub, emb, dim, start)
	}
	id, err := gallery.IdentifyModel(o.model)
	if err != nil {
		return err
	}
	job, err := dist.NewJob(id.SHA256, ds, idx, o.batchSize)
	if err != nil {
		return err
	}
	q, err := dist.Connect(ctx, d.queue, dist.Options{Name: "pipeline-embed"})
	if err != nil {
		return err
	}
	defer q.Close()
	if d.submit {
		s, err := q.Submit(ctx, job)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "queued job %s: %d images in %d batches on %s (%d batches were already queued)\n",
			s.Job, s.Images, s.Batches, d.queue, s.Duplicates)
		return nil
	}
	if d.wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.wait)
		defer cancel()
	}
	emb, dim, cs, err := q.Collect(ctx, job, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "collect: job %s: %d results, %d duplicates dropped, %d redelivered batches, per worker %v\n",
		job.ID, cs.Results, cs.Duplicates, cs.Redelivered, cs.Workers)
	return reportEmbed(stdout, o.out, o.model, sub, emb, dim, start)
}

// reportEmbed writes the embeddings and prints what `pipeline embed` prints.
func reportEmbed(stdout io.Writer, out, model string, ds *data.Dataset, emb []float32, dim int, start time.Time) error {
	labels, err := writeEmbeddings(out, model, ds, emb, dim)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d embeddings of dim %d to %s (labels in %s) in %.1fs\n",
		len(ds.Items), dim, out, labels, time.Since(start).Seconds())
	return nil
}
