package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/gallery"
	"github.com/grouploss/pipeline/pipeline/infer"
	"github.com/grouploss/pipeline/pipeline/npy"
	"github.com/grouploss/pipeline/pipeline/pggallery"
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

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// searchOptions are the flags of `pipeline search`.
type searchOptions struct {
	index       string
	queries     stringList
	queryNPY    string
	k           int
	model       string
	onnxruntime string
	batchSize   int
	threads     int
	jsonOut     bool
	pg          pgSearchFlags // --index postgres://...: see cmd_pgvector.go
}

func (o *searchOptions) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.index, "index", "", "gallery index `FILE` written by `pipeline index`, or postgres://... (written by `index --to`)")
	fs.Var(&o.queries, "query", "query image `FILE` (JPEG or PNG); repeat for several queries")
	fs.StringVar(&o.queryNPY, "query-npy", "", "precomputed query embeddings: a `FILE.npy` of float32 (Q, D), one query per row")
	fs.IntVar(&o.k, "k", 5, "neighbours per query (at most the gallery's size are returned)")
	fs.StringVar(&o.model, "model", "", "embedding model `FILE` for --query (default: the model recorded in the index; it must have the recorded SHA-256)")
	fs.StringVar(&o.onnxruntime, "onnxruntime", "", "path of libonnxruntime.so (default $ONNXRUNTIME_SHARED_LIBRARY_PATH, then .deps/onnxruntime)")
	fs.IntVar(&o.batchSize, "batch-size", 32, "images per onnxruntime run")
	fs.IntVar(&o.threads, "threads", 0, "onnxruntime intra-op threads (0: onnxruntime decides)")
	fs.BoolVar(&o.jsonOut, "json", false, "print the results as a JSON array, one element per query")
	o.pg.addFlags(fs)
}

// searchResult is the outcome of one query.
type searchResult struct {
	Query     string           `json:"query"`
	Neighbors []searchNeighbor `json:"neighbors"`
}

// searchNeighbor is one neighbour of a query. Distance is the cosine distance 1 - cos.
type searchNeighbor struct {
	Rank     int     `json:"rank"`
	Distance float64 `json:"distance"`
	Label    string  `json:"label"`
	Path     string  `json:"path"`
	Row      int     `json:"row"`
}

func cmdSearch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o searchOptions
	fs := newFlagSet("pipeline search", stderr, "usage: pipeline search --index FILE --query IMG [--query IMG2 ...] [-k 5] [--model MODEL.onnx] [--json]\n"+
		"       pipeline search --index FILE --query-npy FILE.npy [-k 5] [--json]\n"+
		"       pipeline search --index postgres://USER@HOST:PORT/DB [--table gallery] [--exact] ...   (pgvector <=>)\n\n"+
		"Exact k nearest neighbours of each query in the gallery index, nearest first, one line per\n"+
		"neighbour: rank, distance, label, path. The distance is the cosine distance 1 - cos(query, image)\n"+
		"in [0, 2] (0: same direction), which orders like the Euclidean distance of L2-normalized\n"+
		"embeddings. Query images are embedded with the index's model and its stored preprocessing.\n\n")
	o.addFlags(fs)
	if help, err := parseFlags(fs, args, " (queries go in --query IMG)"); help || err != nil {
		return err
	}
	res, err := runSearch(ctx, o, stderr)
	if err != nil {
		return err
	}
	if o.jsonOut {
		return writeJSON(stdout, res)
	}
	printSearch(stdout, res)
	return nil
}

// runSearch is `pipeline search`: the queries (images embedded with the index's model, or rows
// of an .npy file) searched in the index.
func runSearch(ctx context.Context, o searchOptions, logw io.Writer) ([]searchResult, error) {
	switch {
	case o.index == "":
		return nil, fmt.Errorf("%w: search needs --index FILE", errUsage)
	case len(o.queries) == 0 && o.queryNPY == "":
		return nil, fmt.Errorf("%w: search needs --query IMG (repeatable) or --query-npy FILE.npy", errUsage)
	case len(o.queries) > 0 && o.queryNPY != "":
		return nil, fmt.Errorf("%w: give either --query images or --query-npy, not both", errUsage)
	case o.queryNPY != "" && o.model != "":
		return nil, fmt.Errorf("%w: --model embeds --query images; --query-npy holds embeddings already", errUsage)
	case o.k < 1:
		return nil, fmt.Errorf("%w: -k %d, want >= 1", errUsage, o.k)
	case o.batchSize < 1:
		return nil, fmt.Errorf("%w: --batch-size %d, want >= 1", errUsage, o.batchSize)
	}
	if pggallery.IsURL(o.index) {
		return runSearchPG(ctx, o, logw)
	}
	idx, err := gallery.Open(o.index)
	if err != nil {
		return nil, err
	}
	q, names, err := searchQueries(ctx, o, idx.Dim, idx.Model, logw)
	if err != nil {
		return nil, err
	}
	nb, err := idx.Search(q, len(names), o.k)
	if err != nil {
		return nil, err
	}
	res := make([]searchResult, len(names))
	for i, name := range names {
		res[i] = searchResult{Query: name, Neighbors: make([]searchNeighbor, len(nb[i]))}
		for r, n := range nb[i] {
			res[i].Neighbors[r] = searchNeighbor{Rank: r + 1, Distance: n.Distance, Label: idx.Labels[n.Row], Path: idx.Paths[n.Row], Row: n.Row}
		}
	}
	return res, nil
}

// searchQueries returns the queries (rows of --query-npy, or the --query images embedded) as one
// (len(names), dim) matrix, and a name for each, for an index of dim-d embeddings of model.
func searchQueries(ctx context.Context, o searchOptions, dim int, model gallery.Model, logw io.Writer) (q []float32, names []string, err error) {
	if o.queryNPY == "" {
		q, err = embedQueries(ctx, o, &gallery.Index{Dim: dim, Model: model}, logw)
		return q, o.queries, err
	}
	q, n, d, err := npy.Read(o.queryNPY)
	if err != nil {
		return nil, nil, err
	}
	if d != dim {
		return nil, nil, fmt.Errorf("search: %q holds %d-d embeddings but the index %q holds %d-d ones", o.queryNPY, d, o.index, dim)
	}
	if err := checkQueryModel(o.queryNPY, o.index, model.SHA256, logw); err != nil {
		return nil, nil, err
	}
	names = make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s[%d]", o.queryNPY, i)
	}
	return q, names, nil
}

// embedQueries embeds the query images with the index's model (or o.model, which must be the
// same file by SHA-256 when the index records one), as one (len(o.queries), Dim) matrix.
func embedQueries(ctx context.Context, o searchOptions, idx *gallery.Index, logw io.Writer) ([]float32, error) {
	model := o.model
	switch {
	case model == "" && idx.Model.SHA256 == "":
		return nil, fmt.Errorf("%w: the index %q was built from precomputed embeddings and records no model: give --model "+
			"(the model that computed them) or --query-npy", errUsage, o.index)
	case model == "":
		model = idx.Model.Path
	}
	id, err := gallery.IdentifyModel(model)
	if err != nil {
		if o.model == "" {
			return nil, fmt.Errorf("search: the index's model: %w (give --model if the model moved)", err)
		}
		return nil, err
	}
	switch {
	case idx.Model.SHA256 == "":
		fmt.Fprintf(logw, "search: the index %q records no model: trusting that %q computed its embeddings\n", o.index, model)
	case id.SHA256 != idx.Model.SHA256:
		return nil, fmt.Errorf("search: model %q (sha256 %.12s…) is not the model the index %q was built with (%q, sha256 %.12s…): "+
			"its embeddings would not be comparable; rebuild the index with this model or give the original one",
			model, id.SHA256, o.index, idx.Model.Path, idx.Model.SHA256)
	}
	e, err := infer.OpenEmbedder(model, infer.WithLibraryPath(o.onnxruntime), infer.WithBatchSize(o.batchSize),
		infer.WithThreads(o.threads))
	if err != nil {
		return nil, err
	}
	defer e.Close()
	if e.Dim() != idx.Dim {
		return nil, fmt.Errorf("search: model %q makes %d-d embeddings but the index %q holds %d-d ones", model, e.Dim(), o.index, idx.Dim)
	}
	ds := &data.Dataset{Items: make([]data.Item, len(o.queries)), Classes: []string{""}}
	for i, p := range o.queries {
		ds.Items[i] = data.Item{Path: p}
	}
	var progress io.Writer
	if len(o.queries) > 100 {
		progress = logw
	}
	q, err := e.EmbedDataset(ctx, ds, progress)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	return q, nil
}

func printSearch(w io.Writer, res []searchResult) {
	for i, r := range res {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "query %s\n", printable(r.Query))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "rank\tdistance\tlabel\tpath")
		for _, n := range r.Neighbors {
			fmt.Fprintf(tw, "%d\t%.6f\t%s\t%s\n", n.Rank, n.Distance, printable(n.Label), printable(n.Path))
		}
		tw.Flush()
	}
}

// printable returns s as is, or Go-quoted when it holds a control character (a newline or a tab
// in a file or class name would add or shift lines of the text output).
func printable(s string) string {
	if strings.ContainsFunc(s, unicode.IsControl) {
		return strconv.Quote(s)
	}
	return s
}
