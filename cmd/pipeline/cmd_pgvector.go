package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/grouploss/pipeline/pipeline/gallery"
	"github.com/grouploss/pipeline/pipeline/pggallery"
)

// pgIndexFlags are the flags of `pipeline index` that write the gallery to PostgreSQL + pgvector.
type pgIndexFlags struct {
	to          string
	table       string
	noHNSW      bool
	buildMemory string
}

func (f *pgIndexFlags) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&f.to, "to", "", "write the gallery to PostgreSQL with pgvector instead of --out: `URL` postgres://USER[:PASSWORD]@HOST:PORT/DB")
	fs.StringVar(&f.table, "table", "gallery", "with --to: the gallery's table `NAME` (replaced in one transaction)")
	fs.BoolVar(&f.noHNSW, "no-hnsw", false, "with --to: no HNSW index (every search scans all rows)")
	fs.StringVar(&f.buildMemory, "hnsw-build-memory", "", "with --to: maintenance_work_mem for the HNSW build, e.g. `1GB` (default: the server's; the build is much faster when the graph fits)")
}

// write stores idx in the database and fills in the summary.
func (f *pgIndexFlags) write(ctx context.Context, idx *gallery.Index, sum *indexSummary) error {
	n, err := pggallery.Write(ctx, f.to, f.table, idx, pggallery.Options{NoHNSW: f.noHNSW, BuildMemory: f.buildMemory})
	if err != nil {
		return err
	}
	sum.Index, sum.Bytes = fmt.Sprintf("table %s of %s", f.table, pggallery.Redact(f.to)), n
	return nil
}

// pgSearchFlags are the flags of `pipeline search` for a gallery in PostgreSQL.
type pgSearchFlags struct {
	table    string
	exact    bool
	efSearch int
}

func (f *pgSearchFlags) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&f.table, "table", "gallery", "with --index postgres://...: the gallery's table `NAME`")
	fs.BoolVar(&f.exact, "exact", false, "with --index postgres://...: exact search (scan every row, bypassing HNSW): the neighbours of a flat index")
	fs.IntVar(&f.efSearch, "ef-search", 0, "with --index postgres://...: HNSW candidate list size (0: pgvector's 40; at most this many neighbours come back)")
}

// runSearchPG is `pipeline search --index postgres://...`.
func runSearchPG(ctx context.Context, o searchOptions, logw io.Writer) ([]searchResult, error) {
	g, err := pggallery.Open(ctx, o.index, o.pg.table)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	q, names, err := searchQueries(ctx, o, g.Dim, g.Model, logw)
	if err != nil {
		return nil, err
	}
	nb, err := g.Search(ctx, q, len(names), o.k, pggallery.SearchOptions{Exact: o.pg.exact, EfSearch: o.pg.efSearch})
	if err != nil {
		return nil, err
	}
	return searchResults(names, nb, func(n pggallery.Neighbor) searchNeighbor {
		return searchNeighbor{Distance: n.Distance, Label: n.Label, Path: n.Path, Row: n.Row}
	}), nil
}
