package pggallery

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline/gallery"
)

func pgURL(t testing.TB) string { return testenv.Postgres(t) }

// clustered returns n unit-ish vectors of dimension d around c centres (a stand-in for image
// embeddings: neighbours are meaningful, not uniform noise), labelled by centre.
func clustered(rng *rand.Rand, n, d, c int) ([]float32, []string, []string) {
	centres := make([]float64, c*d)
	for i := range centres {
		centres[i] = rng.NormFloat64()
	}
	x := make([]float32, n*d)
	paths, labels := make([]string, n), make([]string, n)
	for i := range n {
		k := rng.IntN(c)
		for j := range d {
			x[i*d+j] = float32(centres[k*d+j] + 0.6*rng.NormFloat64())
		}
		paths[i], labels[i] = fmt.Sprintf("/g/%d/%06d.jpg", k, i), strconv.Itoa(k)
	}
	return x, paths, labels
}

func testIndex(t testing.TB, seed uint64, n, d int) *gallery.Index {
	t.Helper()
	x, paths, labels := clustered(rand.New(rand.NewPCG(seed, 1)), n, d, 50)
	idx, err := gallery.New(x, d, paths, labels, gallery.Model{Path: "/m.onnx", SHA256: strings.Repeat("ab", 32)})
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// sameNeighbours fails unless got lists want's rows in order; a swap of two rows whose
// distances differ by less than 1e-5 (float32 rounding in pgvector vs the flat index) is a tie.
// want holds more neighbours than got (the flat index's next ones), so that a tie across the k-th
// place, where float32 sums in another order may swap two rows, is recognized as one.
func sameNeighbours(t *testing.T, q int, got []Neighbor, wantMore []gallery.Neighbor) {
	t.Helper()
	want := wantMore[:min(len(got), len(wantMore))]
	if len(got) != len(want) {
		t.Fatalf("query %d: %d neighbours, want %d", q, len(got), len(want))
	}
	for r := range want {
		if math.Abs(got[r].Distance-want[r].Distance) > 1e-5 {
			t.Fatalf("query %d rank %d: distance %.7f (row %d), flat index %.7f (row %d)", q, r, got[r].Distance, got[r].Row, want[r].Distance, want[r].Row)
		}
	}
	for r := range want {
		if got[r].Row != want[r].Row {
			// Tolerated only as a tie.
			j := slices.IndexFunc(wantMore, func(n gallery.Neighbor) bool { return n.Row == got[r].Row })
			if j < 0 || math.Abs(wantMore[j].Distance-want[r].Distance) > 1e-5 {
				t.Fatalf("query %d rank %d: row %d, flat index row %d", q, r, got[r].Row, want[r].Row)
			}
		}
	}
}

// TestExactSearchMatchesFlatIndex: the gallery written to PostgreSQL, searched exactly (index
// bypassed), returns the flat index's neighbours with its distances; the catalog records the
// model; through HNSW the recall@10 is high.
func TestExactSearchMatchesFlatIndex(t *testing.T) {
	url := pgURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const n, d, nq, k = 3000, 32, 40, 10
	idx := testIndex(t, 1, n+nq, d)
	// The last nq rows are the queries, not in the gallery.
	queries := slices.Clone(idx.Embeddings[n*d:])
	gal, err := gallery.New(slices.Clone(idx.Embeddings[:n*d]), d, idx.Paths[:n], idx.Labels[:n], idx.Model)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Write(ctx, url, "test_exact", gal, Options{BuildMemory: "128MB"}); err != nil {
		t.Fatal(err)
	}
	g, err := Open(ctx, url, "test_exact")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Dim != d || g.Model.SHA256 != gal.Model.SHA256 {
		t.Errorf("catalog: dim %d model %+v, want %d and %+v", g.Dim, g.Model, d, gal.Model)
	}
	want, err := gal.Search(queries, nq, k+5)
	if err != nil {
		t.Fatal(err)
	}
	exact, err := g.Search(ctx, queries, nq, k, SearchOptions{Exact: true})
	if err != nil {
		t.Fatal(err)
	}
	for q := range nq {
		sameNeighbours(t, q, exact[q], want[q])
		if exact[q][0].Path != gal.Paths[want[q][0].Row] || exact[q][0].Label != gal.Labels[want[q][0].Row] {
			t.Fatalf("query %d: path/label %q %q, want %q %q", q, exact[q][0].Path, exact[q][0].Label, gal.Paths[want[q][0].Row], gal.Labels[want[q][0].Row])
		}
	}
	approx, err := g.Search(ctx, queries, nq, k, SearchOptions{EfSearch: 100})
	if err != nil {
		t.Fatal(err)
	}
	if r := recallAt(approx, exact); r < 0.9 {
		t.Errorf("HNSW recall@%d = %.3f, want >= 0.9", k, r)
	}
}

// recallAt is the fraction of the exact neighbours that the approximate search found.
func recallAt(approx, exact [][]Neighbor) float64 {
	hit, total := 0, 0
	for q := range exact {
		for _, e := range exact[q] {
			total++
			if slices.ContainsFunc(approx[q], func(a Neighbor) bool { return a.Row == e.Row }) {
				hit++
			}
		}
	}
	return float64(hit) / float64(total)
}

// TestWriteFailureKeepsOldGallery: a write that fails after its rows went in (an invalid HNSW
// parameter, as a server lost mid-write would) leaves the previous gallery of that name whole.
func TestWriteFailureKeepsOldGallery(t *testing.T) {
	url := pgURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	old := testIndex(t, 2, 100, 8)
	if _, err := Write(ctx, url, "test_keep", old, Options{NoHNSW: true}); err != nil {
		t.Fatal(err)
	}
	_, err := Write(ctx, url, "test_keep", testIndex(t, 3, 500, 16), Options{M: 1000})
	if err == nil || !strings.Contains(err.Error(), "hnsw index") {
		t.Fatalf("write with m=1000: %v, want the HNSW error", err)
	}
	g, err := Open(ctx, url, "test_keep")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var rows int
	if err := g.c.QueryRow(ctx, `SELECT count(*) FROM test_keep`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if g.Dim != 8 || rows != 100 {
		t.Errorf("after the failed write: dim %d, %d rows; want the old gallery's 8 and 100", g.Dim, rows)
	}
}

// TestUnreachable: no server at the address: a clear error naming it, without the password.
func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	url := fmt.Sprintf("postgres://u:secret@127.0.0.1:%d/db?connect_timeout=5", port)
	_, err = Write(context.Background(), url, "g", testIndex(t, 4, 10, 4), Options{})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", port)) || strings.Contains(err.Error(), "secret") {
		t.Errorf("write to a closed port: %v, want an error naming 127.0.0.1:%d without the password", err, port)
	}
	if _, err := Open(context.Background(), url, "Bad-Name"); err == nil || !strings.Contains(err.Error(), "table name") {
		t.Errorf("open with a bad table name: %v", err)
	}
}

// TestWriteCutOffKeepsOldGallery: the client goes away in the middle of a write (its context
// ends during the inserts, the connection is closed): the server rolls the transaction back and
// the previous gallery of that name is whole.
func TestWriteCutOffKeepsOldGallery(t *testing.T) {
	url := pgURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := Write(ctx, url, "test_cut", testIndex(t, 5, 100, 8), Options{NoHNSW: true}); err != nil {
		t.Fatal(err)
	}
	short, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer scancel()
	_, err := Write(short, url, "test_cut", testIndex(t, 6, 30000, 64), Options{})
	if err == nil {
		t.Fatal("a write cut off after 300ms succeeded: make the gallery bigger")
	}
	t.Logf("cut-off write: %v", err)
	var g *Gallery
	// The server notices the closed connection and rolls back; pglite may still be busy with it.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if g, err = Open(ctx, url, "test_cut"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var rows int
	if err := g.c.QueryRow(ctx, `SELECT count(*) FROM test_cut`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if g.Dim != 8 || rows != 100 {
		t.Errorf("after the cut-off write: dim %d, %d rows; want the old gallery's 8 and 100", g.Dim, rows)
	}
}
