package main

import (
	"fmt"
	"math"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/npy"
)

// TestEmbedShards: `embed --shard i/n` for i = 0..n-1 embeds disjoint parts whose concatenation
// is every image in path order, each row equal to the single-process embedding of that image.
func TestEmbedShards(t *testing.T) {
	needORT(t)
	model := toolModel(t)
	root := toolDataset(t, 4, 3, 5)
	ds, want := toolEmbedWant(t, model, root)
	order := make([]int, len(ds.Items))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(ds.Resolve(a), ds.Resolve(b)) })
	dir := t.TempDir()
	var got []float32
	var paths []string
	for i := range 3 {
		out := filepath.Join(dir, fmt.Sprintf("part-%d.npy", i))
		r := toolRun("embed", "--model", model, "--data", root, "--out", out, "--shard", fmt.Sprintf("%d/3", i))
		if r.code != 0 {
			t.Fatalf("shard %d: exit %d\n%s", i, r.code, r.stderr)
		}
		x, n, d, err := npy.Read(out)
		if err != nil {
			t.Fatal(err)
		}
		if d != 3 || n < 3 || n > 5 {
			t.Fatalf("shard %d: shape (%d, %d), want 4 +- 1 rows of 3", i, n, d)
		}
		got = append(got, x...)
		part, err := data.LoadManifest(labelsPath(out))
		if err != nil {
			t.Fatal(err)
		}
		for k := range part.Items {
			paths = append(paths, part.Resolve(k))
		}
	}
	if len(paths) != len(order) {
		t.Fatalf("the shards hold %d images, the dataset %d", len(paths), len(order))
	}
	for k, i := range order {
		if abs, _ := filepath.Abs(ds.Resolve(i)); paths[k] != abs {
			t.Fatalf("row %d of the shards is %s, want %s (path order)", k, paths[k], abs)
		}
		for j := range 3 {
			if math.Abs(float64(got[k*3+j]-want[i*3+j])) > 1e-6 {
				t.Fatalf("row %d (%s) = %v, single-process %v", k, paths[k], got[k*3:k*3+3], want[i*3:i*3+3])
			}
		}
	}
}

// TestDistBadUsage: the queue and shard flags in wrong combinations, a bad shard, an unreachable
// queue or database: exit 2 for usage, 1 with a clear error otherwise.
func TestDistBadUsage(t *testing.T) {
	model := toolModel(t)
	root := toolDataset(t, 2, 2)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	out := filepath.Join(t.TempDir(), "e.npy")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"embed", "--model", model, "--data", root, "--submit"}, 2, "go with --queue"},
		{[]string{"embed", "--model", model, "--data", root, "--queue", "nats://" + closed}, 2, "one of --submit"},
		{[]string{"embed", "--model", model, "--data", root, "--queue", "nats://" + closed, "--submit", "--collect", "--out", out}, 2, "one of --submit"},
		{[]string{"embed", "--model", model, "--data", root, "--queue", "nats://" + closed, "--submit", "--out", out}, 2, "writes nothing"},
		{[]string{"embed", "--model", model, "--data", root, "--queue", "nats://" + closed, "--collect"}, 2, "needs --out"},
		{[]string{"embed", "--model", model, "--data", root, "--out", out, "--shard", "2/2"}, 2, "0 <= i < n"},
		{[]string{"embed", "--model", model, "--data", root, "--queue", "nats://" + closed, "--submit"}, 1, closed},
		{[]string{"worker", "--model", model}, 2, "needs --queue"},
		{[]string{"worker", "--model", model, "--queue", "nats://" + closed}, 1, closed},
		{[]string{"index", "--model", model, "--data", root, "--out", out, "--to", "postgres://x@" + closed + "/db"}, 2, "not both"},
		{[]string{"index", "--model", model, "--data", root, "--to", "postgres://u:pw@" + closed + "/db?connect_timeout=5"}, 1, closed},
		{[]string{"search", "--index", "postgres://u:pw@" + closed + "/db?connect_timeout=5", "--query-npy", out}, 1, closed},
	} {
		r := toolRun(c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) || strings.Contains(r.stderr, ":pw@") {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q (no password)", c.args, r.code, r.stderr, c.code, c.want)
		}
	}
}
