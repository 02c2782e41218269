package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"

	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/metrics"
	"github.com/grouploss/pipeline/pipeline/npy"
)

// evalOptions are the flags of `pipeline eval`.
type evalOptions struct {
	embedderFlags
	embeddings     string
	labels         string
	seed           int64
	kmeansRestarts int
	jsonOut        bool
}

func (o *evalOptions) addFlags(fs *flag.FlagSet) {
	o.embedderFlags.addFlags(fs)
	fs.StringVar(&o.embeddings, "embeddings", "", "evaluate a `FILE.npy` of float32 (N, D) embeddings (from `pipeline embed`) instead of --model/--data")
	fs.StringVar(&o.labels, "labels", "", "CSV `FILE` with a header path,label and one line per embedding row (default: FILE.csv beside --embeddings)")
	fs.Int64Var(&o.seed, "seed", 1, "k-means seed")
	fs.IntVar(&o.kmeansRestarts, "kmeans-restarts", 0, "k-means++ restarts for NMI/AMI (the lowest-inertia clustering is kept); 0: 10, fewer when\n"+
		"images x classes x dim > 2e9, down to 1 (e.g. 100k images x 1000 classes x 512-d). Lloyd iterations: at most 300,\n"+
		"fewer when images x classes x dim > 4.3e9, down to 25 (the JSON's kmeans section says what was done)")
	fs.BoolVar(&o.jsonOut, "json", false, "print the result as JSON")
}

// evalReport is the outcome of `pipeline eval`.
type evalReport struct {
	Model      string `json:"model,omitempty"`
	Data       string `json:"data,omitempty"`
	Embeddings string `json:"embeddings,omitempty"`
	Labels     string `json:"labels,omitempty"`
	Images     int    `json:"images"`
	Classes    int    `json:"classes"`
	Dim        int    `json:"dim"`
	// KMeansRestarts is the number of k-means++ restarts behind NMI and AMI.
	KMeansRestarts int            `json:"kmeans_restarts"`
	Metrics        metrics.Result `json:"metrics"`
	// KMeans is the clustering's plan (restarts, iteration cap, why) and what it did.
	KMeans *metrics.KMeansReport `json:"kmeans,omitempty"`
	// Stages are the wall time and matrix-product work of each stage (bench-memory rates them).
	Stages []evalStage `json:"stages"`
}

func cmdEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o evalOptions
	fs := newFlagSet("pipeline eval", stderr, "usage: pipeline eval --model MODEL.onnx --data DIR|CSV [flags]\n"+
		"       pipeline eval --embeddings FILE.npy [--labels FILE.csv] [flags]\n\n"+
		"Recall@1/2/4/8, NMI, AMI, MAP@R and R-precision over all the images and classes given\n"+
		"(each image queries all the others).\n\n")
	o.addFlags(fs)
	if help, err := parseFlags(fs, args, ""); help || err != nil {
		return err
	}
	rep, err := runEval(ctx, o, stderr)
	if err != nil {
		return err
	}
	if o.jsonOut {
		return writeJSON(stdout, rep)
	}
	printEval(stdout, rep)
	return nil
}

// runEval is `pipeline eval`: embeddings from the model on the data, or from an .npy file with
// its labels, then the retrieval and clustering metrics over all of them.
func runEval(ctx context.Context, o evalOptions, progress io.Writer) (*evalReport, error) {
	fromModel := o.model != "" || o.data != ""
	switch {
	case fromModel && o.embeddings != "":
		return nil, fmt.Errorf("%w: give either --model and --data, or --embeddings [--labels], not both", errUsage)
	case fromModel && (o.model == "" || o.data == ""):
		return nil, fmt.Errorf("%w: eval needs both --model and --data", errUsage)
	case !fromModel && o.embeddings == "":
		return nil, fmt.Errorf("%w: eval needs --model and --data, or --embeddings", errUsage)
	case o.labels != "" && o.embeddings == "":
		return nil, fmt.Errorf("%w: --labels goes with --embeddings (with --data the labels come from the dataset)", errUsage)
	case o.kmeansRestarts < 0 || o.kmeansRestarts > metrics.MaxKMeansRestarts:
		return nil, fmt.Errorf("%w: --kmeans-restarts %d, want 1..%d (or 0 for the default)", errUsage, o.kmeansRestarts, metrics.MaxKMeansRestarts)
	case o.batchSize < 1:
		return nil, fmt.Errorf("%w: --batch-size %d, want >= 1", errUsage, o.batchSize)
	}
	rep := &evalReport{}
	var emb []float32
	var labels []int
	if fromModel {
		ds, e, dim, err := o.embedData(ctx, progress)
		if err != nil {
			return nil, err
		}
		rep.Model, rep.Data, rep.Dim = o.model, ds.Source, dim
		emb, labels = e, ds.Labels(allItems(len(ds.Items)))
	} else {
		lp := o.labels
		if lp == "" {
			lp = labelsPath(o.embeddings)
		}
		x, n, d, err := npy.Read(o.embeddings)
		if err != nil {
			return nil, err
		}
		if labels, err = readLabels(lp); err != nil {
			return nil, err
		}
		if _, err := checkPair(o.embeddings, lp, false); err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
		if len(labels) != n {
			return nil, fmt.Errorf("eval: %q has %d rows but %q lists %d images: they must match line for line", o.embeddings, n, lp, len(labels))
		}
		rep.Embeddings, rep.Labels, rep.Dim, emb = o.embeddings, lp, d, x
	}
	rep.Images = len(labels)
	seen := map[int]bool{}
	for _, l := range labels {
		seen[l] = true
	}
	rep.Classes = len(seen)
	if rep.Images < 2 {
		return nil, fmt.Errorf("eval: %d images, need at least 2 (each one queries the others)", rep.Images)
	}
	plan := metrics.PlanKMeans(rep.Images, rep.Dim, rep.Classes, o.kmeansRestarts) // as Evaluate plans it
	rep.KMeansRestarts = plan.Restarts
	fmt.Fprintf(progress, "eval: k-means of %d clusters: %s\n", plan.Clusters, plan.Reason)
	workers, block := evalParallelism(rep.Images)
	res, err := metrics.Evaluate(emb, rep.Images, rep.Dim, labels,
		metrics.Options{KMeansRestarts: o.kmeansRestarts, Seed: o.seed, Workers: workers, BlockSize: block,
			Progress: timeStages(&rep.Stages, pipeline.EvalProgress(progress, "")),
			KMeansDone: func(km metrics.KMeansReport) {
				rep.KMeans = &km
				fmt.Fprintf(progress, "eval: k-means: Lloyd iterations %v per restart, %d of %d stopped at the cap of %d before converging\n",
					km.Iterations, km.Capped, km.Restarts, km.MaxIter)
			}})
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	rep.Metrics = res
	return rep, nil
}

// evalBufferBytes bounds the float32 distance buffers of eval's concurrent blocks together (each
// worker holds block x n of them): twice the 128 MiB of metrics' default block, on any number of
// cores, so that bench-memory's peak stays what it is on two.
const evalBufferBytes = 256 << 20

// evalParallelism returns the metrics workers for n embeddings, one per core, and a block size
// (within metrics' default 64..4096 rows) that keeps their buffers within evalBufferBytes. The
// metrics do not depend on either.
func evalParallelism(n int) (workers, block int) {
	workers = runtime.GOMAXPROCS(0)
	return workers, min(max(evalBufferBytes/(4*n*workers), 64), 4096)
}

func printEval(w io.Writer, r *evalReport) {
	src := fmt.Sprintf("%s on %s", r.Model, r.Data)
	if r.Embeddings != "" {
		src = fmt.Sprintf("%s with labels %s", r.Embeddings, r.Labels)
	}
	fmt.Fprintf(w, "%s: %d images, %d classes, %d-d embeddings\n", src, r.Images, r.Classes, r.Dim)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	m := r.Metrics
	for _, row := range []struct {
		name string
		v    float64
	}{{"Recall@1", m.RecallAt1}, {"Recall@2", m.RecallAt2}, {"Recall@4", m.RecallAt4}, {"Recall@8", m.RecallAt8},
		{"NMI", m.NMI}, {"AMI", m.AMI}, {"MAP@R", m.MAPAtR}, {"R-precision", m.RPrecision}} {
		fmt.Fprintf(tw, "%s\t%.4f\n", row.name, row.v)
	}
	tw.Flush()
}
