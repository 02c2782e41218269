package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"

	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/gallery"
	"github.com/grouploss/pipeline/pipeline/infer"
	"github.com/grouploss/pipeline/pipeline/npy"
	"github.com/grouploss/pipeline/pipeline/pggallery"
)

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
	onnxruntimeFlag(fs, &o.onnxruntime)
	fs.IntVar(&o.batchSize, "batch-size", 32, "images per onnxruntime run")
	threadsFlag(fs, &o.threads)
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
	return searchResults(names, nb, func(n gallery.Neighbor) searchNeighbor {
		return searchNeighbor{Distance: n.Distance, Label: idx.Labels[n.Row], Path: idx.Paths[n.Row], Row: n.Row}
	}), nil
}

// searchResults pairs each query of names with its neighbours nb, nearest first, as neighbor
// converts them (the rank is set here).
func searchResults[N any](names []string, nb [][]N, neighbor func(N) searchNeighbor) []searchResult {
	res := make([]searchResult, len(names))
	for i, name := range names {
		res[i] = searchResult{Query: name, Neighbors: make([]searchNeighbor, len(nb[i]))}
		for r, n := range nb[i] {
			res[i].Neighbors[r] = neighbor(n)
			res[i].Neighbors[r].Rank = r + 1
		}
	}
	return res
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
