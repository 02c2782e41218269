package pggallery

import (
	"context"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/grouploss/pipeline/pipeline/gallery"
)

// BenchmarkHNSWRecall writes a gallery of $PIPELINE_PG_RECALL_N (default 10000) clustered
// 128-d vectors with its HNSW index and reports, for 100 held-out queries, recall@10 of the
// HNSW search (ef_search 40, pgvector's default, and 100) against the exact scan, and the
// per-query latency of each, and the seconds the write and HNSW build took. The README's numbers
// are from N=100000.
func BenchmarkHNSWRecall(b *testing.B) {
	url := pgURL(b)
	n := 10000
	if s := os.Getenv("PIPELINE_PG_RECALL_N"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 100 {
			b.Fatalf("PIPELINE_PG_RECALL_N=%q: want an integer >= 100", s)
		}
	}
	const d, nq, k = 128, 100, 10
	ctx := context.Background()
	all := testIndex(b, 7, n+nq, d)
	queries := slices.Clone(all.Embeddings[n*d:])
	gal, err := gallery.New(all.Embeddings[:n*d], d, all.Paths[:n], all.Labels[:n], all.Model)
	if err != nil {
		b.Fatal(err)
	}
	// PIPELINE_PG_RECALL_REUSE=1 searches the gallery a previous run of the same N left on the
	// server (the vectors are the same: fixed seed) instead of writing it again.
	start, writeS := time.Now(), 0.0
	if os.Getenv("PIPELINE_PG_RECALL_REUSE") != "1" {
		if _, err := Write(ctx, url, "bench_recall", gal, Options{BuildMemory: "1GB"}); err != nil {
			b.Fatal(err)
		}
		writeS = time.Since(start).Seconds()
	}
	g, err := Open(ctx, url, "bench_recall")
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	timed := func(o SearchOptions) ([][]Neighbor, float64) {
		t := time.Now()
		res, err := g.Search(ctx, queries, nq, k, o)
		if err != nil {
			b.Fatal(err)
		}
		return res, float64(time.Since(t).Microseconds()) / 1000 / nq
	}
	b.ResetTimer()
	for range b.N {
		exact, exactMS := timed(SearchOptions{Exact: true})
		h40, h40MS := timed(SearchOptions{EfSearch: 40})
		h100, h100MS := timed(SearchOptions{EfSearch: 100})
		b.ReportMetric(recallAt(h40, exact), "recall@10-ef40")
		b.ReportMetric(recallAt(h100, exact), "recall@10-ef100")
		b.ReportMetric(exactMS, "exact-ms/query")
		b.ReportMetric(h40MS, "hnsw-ef40-ms/query")
		b.ReportMetric(h100MS, "hnsw-ef100-ms/query")
	}
	b.ReportMetric(writeS, "write+hnsw-s")
}
