package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/grouploss/pipeline/internal/atomicfile"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/gallery"
	"github.com/grouploss/pipeline/pipeline/infer"
	"github.com/grouploss/pipeline/pipeline/npy"
)

// embedderFlags are the flags shared by the commands that run an embedding model.
type embedderFlags struct {
	model       string
	data        string
	onnxruntime string
	batchSize   int
	threads     int
	workers     int
}

func (o *embedderFlags) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.model, "model", "", "embedding model `FILE` (model.onnx of a run folder, or any model with preprocess.* metadata)")
	fs.StringVar(&o.data, "data", "", "image folder (root/<class>/<image>), CSV manifest (path,label[,split]) or folder with manifest.csv")
	onnxruntimeFlag(fs, &o.onnxruntime)
	fs.IntVar(&o.batchSize, "batch-size", 32, "images per onnxruntime run")
	threadsFlag(fs, &o.threads)
	fs.IntVar(&o.workers, "workers", 0, "image-decoding goroutines (0: one per CPU)")
}

// embedData loads the dataset and computes its embeddings (n x dim, in dataset order), drawing
// progress on progress.
func (o *embedderFlags) embedData(ctx context.Context, progress io.Writer) (ds *data.Dataset, emb []float32, dim int, err error) {
	if ds, err = o.loadData(); err != nil {
		return nil, nil, 0, err
	}
	emb, dim, err = o.embedDataset(ctx, ds, progress)
	return ds, emb, dim, err
}

// loadData loads --data.
func (o *embedderFlags) loadData() (*data.Dataset, error) {
	ds, err := data.Load(o.data)
	if err != nil {
		return nil, fmt.Errorf("%w (--data must be an image folder root/<class>/<image>, a .csv manifest path,label[,split], or a folder holding manifest.csv)", err)
	}
	return ds, nil
}

// embedDataset computes the embeddings of ds with --model (n x dim, in dataset order).
func (o *embedderFlags) embedDataset(ctx context.Context, ds *data.Dataset, progress io.Writer) (emb []float32, dim int, err error) {
	e, err := infer.OpenEmbedder(o.model, infer.WithLibraryPath(o.onnxruntime), infer.WithBatchSize(o.batchSize),
		infer.WithThreads(o.threads), infer.WithWorkers(o.workers))
	if err != nil {
		return nil, 0, err
	}
	defer e.Close()
	if emb, err = e.EmbedDataset(ctx, ds, progress); err != nil {
		return nil, 0, err
	}
	return emb, e.Dim(), nil
}

// embedOptions are the flags of `pipeline embed`.
type embedOptions struct {
	embedderFlags
	out  string
	dist distFlags // --queue, --submit, --collect, --shard: see cmd_embed_dist.go
}

func (o *embedOptions) addFlags(fs *flag.FlagSet) {
	o.embedderFlags.addFlags(fs)
	fs.StringVar(&o.out, "out", "", "output `FILE.npy`: float32 (N, D) embeddings; FILE.csv beside it lists path,label,class per row")
	o.dist.addFlags(fs)
}

// embedSummary describes what `pipeline embed` wrote.
type embedSummary struct {
	Embeddings string
	Labels     string
	Images     int
	Dim        int
	Seconds    float64
}

func cmdEmbed(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o embedOptions
	fs := newFlagSet("pipeline embed", stderr, "usage: pipeline embed --model MODEL.onnx --data DIR|CSV --out FILE.npy [flags]\n\n"+
		"Writes the embeddings of every image as a NumPy float32 (N, D) array and FILE.csv (path,label,class,\n"+
		"one line per row), preprocessing the images as the model's metadata says.\n\n")
	o.addFlags(fs)
	if help, err := parseFlags(fs, args, ""); help || err != nil {
		return err
	}
	if o.dist.active() {
		return cmdEmbedDist(ctx, o, stdout, stderr)
	}
	sum, err := runEmbed(ctx, o, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d embeddings of dim %d to %s (labels in %s) in %.1fs\n",
		sum.Images, sum.Dim, sum.Embeddings, sum.Labels, sum.Seconds)
	return nil
}

// runEmbed is `pipeline embed`: embeddings of o.data with o.model written to o.out (.npy) and
// the matching labels beside it (.csv), as a pair (writePair).
func runEmbed(ctx context.Context, o embedOptions, progress io.Writer) (*embedSummary, error) {
	switch {
	case o.model == "" || o.data == "" || o.out == "":
		return nil, fmt.Errorf("%w: embed needs --model, --data and --out", errUsage)
	case !strings.EqualFold(filepath.Ext(o.out), ".npy"):
		return nil, fmt.Errorf("%w: --out %q must end in .npy", errUsage, o.out)
	case o.batchSize < 1:
		return nil, fmt.Errorf("%w: --batch-size %d, want >= 1", errUsage, o.batchSize)
	}
	start := time.Now()
	ds, emb, dim, err := o.embedData(ctx, progress)
	if err != nil {
		return nil, err
	}
	labels, err := writeEmbeddings(o.out, o.model, ds, emb, dim)
	if err != nil {
		return nil, err
	}
	return &embedSummary{Embeddings: o.out, Labels: labels, Images: len(ds.Items), Dim: dim,
		Seconds: time.Since(start).Seconds()}, nil
}

// writeEmbeddings writes emb (one row of dim values per item of ds, computed by model) to out
// (.npy) and the labels beside it (.csv) as a pair (writePair), and returns the labels' path.
func writeEmbeddings(out, model string, ds *data.Dataset, emb []float32, dim int) (labels string, err error) {
	if dir := filepath.Dir(out); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("embed: %w", err)
		}
	}
	id, err := gallery.IdentifyModel(model)
	if err != nil {
		return "", err
	}
	labels = labelsPath(out)
	err = writePair(out, labels,
		func(path string) error { return npy.Write(path, emb, len(ds.Items), dim) },
		func(path, npySHA string) error {
			return writeLabels(path, ds, pairIdentity{NPY: npySHA, Model: id.SHA256})
		})
	if err != nil {
		return "", err
	}
	return labels, nil
}

// labelsPath is the .csv beside an .npy file.
func labelsPath(npy string) string {
	return strings.TrimSuffix(npy, filepath.Ext(npy)) + ".csv"
}

// writeLabels writes the dataset's items as a CSV manifest path,label,class (absolute paths,
// integer labels, class names) and the pair's identity (npy_sha256, model_sha256), one line per
// embedding row, atomically.
func writeLabels(path string, ds *data.Dataset, id pairIdentity) error {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.Write([]string{"path", "label", "class", pairNPYColumn, pairModelColumn})
	for i, it := range ds.Items {
		p, err := filepath.Abs(ds.Resolve(i))
		if err != nil {
			return fmt.Errorf("embed: %w", err)
		}
		w.Write([]string{filepath.ToSlash(p), strconv.Itoa(it.Label), it.Class, id.NPY, id.Model})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return fmt.Errorf("embed: %s: %w", path, err)
	}
	if err := atomicfile.WriteBytes(path, "labels", b.Bytes()); err != nil {
		return fmt.Errorf("embed: %w", err)
	}
	return nil
}

// readLabels reads the labels of a CSV manifest (path,label[,...]), one per row, in order.
func readLabels(path string) ([]int, error) {
	ds, err := data.LoadManifest(path)
	if err != nil {
		var me *data.ManifestError
		if errors.As(err, &me) || errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w (--labels must be a CSV with a header path,label, as `pipeline embed` writes)", err)
		}
		return nil, err
	}
	return ds.Labels(allItems(len(ds.Items))), nil
}

func allItems(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}
