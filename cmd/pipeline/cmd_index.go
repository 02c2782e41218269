package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/gallery"
	"github.com/grouploss/pipeline/pipeline/npy"
)

// indexOptions are the flags of `pipeline index`.
type indexOptions struct {
	embedderFlags
	embeddings string
	labels     string
	out        string
	jsonOut    bool
	pg         pgIndexFlags // --to postgres://...: see cmd_pgvector.go
}

func (o *indexOptions) addFlags(fs *flag.FlagSet) {
	o.embedderFlags.addFlags(fs)
	fs.StringVar(&o.embeddings, "embeddings", "", "build from a `FILE.npy` of float32 (N, D) embeddings (from `pipeline embed`) instead of --model/--data")
	fs.StringVar(&o.labels, "labels", "", "CSV `FILE` with a header path,label[,class] and one line per embedding row (default: FILE.csv beside --embeddings)")
	fs.StringVar(&o.out, "out", "", "output index `FILE` (written atomically)")
	fs.BoolVar(&o.jsonOut, "json", false, "print the summary as JSON")
	o.pg.addFlags(fs)
}

// indexSummary describes what `pipeline index` wrote.
type indexSummary struct {
	Index       string  `json:"index"`
	Images      int     `json:"images"`
	Classes     int     `json:"classes"`
	Dim         int     `json:"dim"`
	Model       string  `json:"model,omitempty"`
	ModelSHA256 string  `json:"model_sha256,omitempty"`
	Embeddings  string  `json:"embeddings,omitempty"`
	Labels      string  `json:"labels,omitempty"`
	Bytes       int64   `json:"bytes"`
	Seconds     float64 `json:"seconds"`
}

func cmdIndex(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o indexOptions
	fs := newFlagSet("pipeline index", stderr, "usage: pipeline index --model MODEL.onnx --data DIR|CSV --out FILE [flags]\n"+
		"       pipeline index --embeddings FILE.npy [--labels FILE.csv] --out FILE [flags]\n"+
		"       pipeline index ... --to postgres://USER@HOST:PORT/DB [--table gallery]   (PostgreSQL + pgvector, HNSW)\n\n"+
		"Writes a gallery index for `pipeline search`: the L2-normalized embeddings of every image, its\n"+
		"path and label and, with --model, the model's path, SHA-256 and preprocessing metadata. One\n"+
		"versioned file with a checksum, written atomically.\n\n")
	o.addFlags(fs)
	if help, err := parseFlags(fs, args, ""); help || err != nil {
		return err
	}
	sum, err := runIndex(ctx, o, stderr)
	if err != nil {
		return err
	}
	if o.jsonOut {
		return writeJSON(stdout, sum)
	}
	src := "model " + sum.Model
	if sum.Embeddings != "" {
		src = sum.Embeddings + " (no model recorded)"
	}
	fmt.Fprintf(stdout, "wrote index %s: %d images, %d classes, %d-d embeddings of %s, %d bytes in %.1fs\n",
		sum.Index, sum.Images, sum.Classes, sum.Dim, src, sum.Bytes, sum.Seconds)
	return nil
}

// runIndex is `pipeline index`: the embeddings of o.data with o.model, or those of an .npy file
// with its labels CSV, written as a gallery index to o.out.
func runIndex(ctx context.Context, o indexOptions, progress io.Writer) (*indexSummary, error) {
	fromModel := o.model != "" || o.data != ""
	switch {
	case o.out == "" && o.pg.to == "":
		return nil, fmt.Errorf("%w: index needs --out FILE (or --to postgres://...)", errUsage)
	case o.out != "" && o.pg.to != "":
		return nil, fmt.Errorf("%w: give either --out FILE or --to postgres://..., not both", errUsage)
	case fromModel && o.embeddings != "":
		return nil, fmt.Errorf("%w: give either --model and --data, or --embeddings [--labels], not both", errUsage)
	case fromModel && (o.model == "" || o.data == ""):
		return nil, fmt.Errorf("%w: index needs both --model and --data", errUsage)
	case !fromModel && o.embeddings == "":
		return nil, fmt.Errorf("%w: index needs --model and --data, or --embeddings", errUsage)
	case o.labels != "" && o.embeddings == "":
		return nil, fmt.Errorf("%w: --labels goes with --embeddings (with --data the labels come from the dataset)", errUsage)
	case o.batchSize < 1:
		return nil, fmt.Errorf("%w: --batch-size %d, want >= 1", errUsage, o.batchSize)
	}
	start := time.Now()
	sum := &indexSummary{Index: o.out}
	var idx *gallery.Index
	if fromModel {
		id, err := gallery.IdentifyModel(o.model)
		if err != nil {
			return nil, err
		}
		ds, emb, dim, err := o.embedData(ctx, progress)
		if err != nil {
			return nil, err
		}
		if idx, err = gallery.FromDataset(ds, emb, dim, id); err != nil {
			return nil, err
		}
		sum.Model, sum.ModelSHA256 = id.Path, id.SHA256
	} else {
		lp := o.labels
		if lp == "" {
			lp = labelsPath(o.embeddings)
		}
		emb, n, d, err := npy.Read(o.embeddings)
		if err != nil {
			return nil, err
		}
		paths, labels, err := readGallery(lp)
		if err != nil {
			return nil, err
		}
		if _, err := checkPair(o.embeddings, lp, false); err != nil {
			return nil, fmt.Errorf("index: %w", err)
		}
		if len(paths) != n {
			return nil, fmt.Errorf("index: %q has %d rows but %q lists %d images: they must match line for line", o.embeddings, n, lp, len(paths))
		}
		if idx, err = gallery.New(emb, d, paths, labels, gallery.Model{}); err != nil {
			return nil, fmt.Errorf("index: %q: %w", o.embeddings, err)
		}
		sum.Embeddings, sum.Labels = o.embeddings, lp
	}
	if o.pg.to != "" {
		if err := o.pg.write(ctx, idx, sum); err != nil {
			return nil, err
		}
	} else if err := writeIndexFile(o.out, idx); err != nil {
		return nil, err
	}
	classes := map[string]bool{}
	for _, l := range idx.Labels {
		classes[l] = true
	}
	sum.Images, sum.Classes, sum.Dim = idx.Len(), len(classes), idx.Dim
	if fi, err := os.Stat(o.out); err == nil {
		sum.Bytes = fi.Size()
	}
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

// writeIndexFile writes idx to path, creating its folder.
func writeIndexFile(path string, idx *gallery.Index) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("index: %w", err)
		}
	}
	return gallery.Write(path, idx)
}

// readGallery reads a labels CSV (path,label[,class], as `pipeline embed` writes): the absolute
// path of each row and its label, the class column when there is one, else the label column.
func readGallery(path string) (paths, labels []string, err error) {
	ds, err := data.LoadManifest(path)
	if err != nil {
		var me *data.ManifestError
		if errors.As(err, &me) || errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("%w (--labels must be a CSV with a header path,label[,class], as `pipeline embed` writes)", err)
		}
		return nil, nil, err
	}
	paths = make([]string, len(ds.Items))
	labels = make([]string, len(ds.Items))
	for i, it := range ds.Items {
		p, err := filepath.Abs(ds.Resolve(i))
		if err != nil {
			return nil, nil, fmt.Errorf("index: %w", err)
		}
		paths[i], labels[i] = filepath.ToSlash(p), it.Class
	}
	// LoadManifest ignores a class column; `pipeline embed` writes the class names there.
	r, _, cols, closeFile, err := openLabelsCSV(path)
	if err != nil {
		return nil, nil, fmt.Errorf("index: %w", err)
	}
	defer closeFile()
	col, ok := cols["class"]
	if !ok {
		return paths, labels, nil
	}
	for i := range labels {
		rec, err := r.Read()
		if err != nil {
			return nil, nil, fmt.Errorf("index: labels %q row %d: %w", path, i+1, err)
		}
		if c := strings.TrimSpace(rec[col]); c != "" {
			labels[i] = c
		}
	}
	return paths, labels, nil
}
