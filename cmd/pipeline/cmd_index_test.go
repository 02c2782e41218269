package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/pipeline/gallery"
	"github.com/grouploss/pipeline/pipeline/npy"
)

// TestIndexSearchCommands: `pipeline index` from a model and a dataset records the Embedder's
// embeddings, the absolute paths, the class names and the model's identity; `pipeline search`
// embeds query images with the recorded model and returns Index.Search's neighbours (an image of
// the gallery finds itself first at distance 0); an index built from `pipeline embed`'s .npy
// gives the same results; a different or moved model is refused.
func TestIndexSearchCommands(t *testing.T) {
	needORT(t)
	model := toolModel(t)
	root := toolDataset(t, 5, 4, 6)
	dir := t.TempDir()
	idxPath := filepath.Join(dir, "sub", "g.idx")
	r := toolRun("index", "--model", model, "--data", root, "--out", idxPath, "--batch-size", "4")
	if r.code != 0 {
		t.Fatalf("index: exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "wrote index "+idxPath+": 15 images, 3 classes, 3-d embeddings of model ") ||
		!strings.Contains(r.stderr, "embed: 15 done") {
		t.Errorf("index: stdout %q, stderr %q: want the summary and the progress", r.stdout, r.stderr)
	}
	ds, want := toolEmbedWant(t, model, root)
	idx, err := gallery.Open(idxPath)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(model)
	sum := sha256.Sum256(raw)
	absModel, _ := filepath.Abs(model)
	if idx.Len() != 15 || idx.Dim != 3 || idx.Model.SHA256 != hex.EncodeToString(sum[:]) || idx.Model.Path != absModel ||
		idx.Model.Metadata["preprocess.size"] != "6x6" || idx.Model.Metadata["embedding_dim"] != "3" {
		t.Fatalf("index: %d rows of dim %d, model %+v; want 15 of dim 3 and the model's path, SHA-256 and metadata",
			idx.Len(), idx.Dim, idx.Model)
	}
	for i, it := range ds.Items {
		abs, _ := filepath.Abs(ds.Resolve(i))
		if idx.Paths[i] != filepath.ToSlash(abs) || idx.Labels[i] != it.Class {
			t.Errorf("row %d: %q %q, want %q %q", i, idx.Paths[i], idx.Labels[i], abs, it.Class)
		}
	}
	for i := range want {
		if math.Abs(float64(idx.Embeddings[i]-want[i])) > 1e-6 {
			t.Fatalf("embedding value %d: %v, want the Embedder's %v", i, idx.Embeddings[i], want[i])
		}
	}

	q1, q2 := ds.Resolve(2), ds.Resolve(11)
	r = toolRun("search", "--index", idxPath, "--query", q1, "--query", q2, "-k", "4", "--json")
	if r.code != 0 {
		t.Fatalf("search: exit %d\n%s", r.code, r.stderr)
	}
	var res []searchResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	wantNB, err := idx.Search(append(append([]float32{}, want[2*3:3*3]...), want[11*3:12*3]...), 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Query != q1 || res[1].Query != q2 {
		t.Fatalf("search: %d results %+v, want 2 for %s, %s", len(res), res, q1, q2)
	}
	for qi, self := range []int{2, 11} {
		got := res[qi].Neighbors
		if len(got) != 4 || got[0].Row != self || got[0].Distance > 1e-6 || got[0].Path != idx.Paths[self] || got[0].Rank != 1 {
			t.Errorf("query %d: first neighbour %+v, want itself (row %d) at distance ~0", qi, got[0], self)
		}
		for r, nb := range got {
			w := wantNB[qi][r]
			if nb.Rank != r+1 || nb.Label != idx.Labels[w.Row] || nb.Path != idx.Paths[w.Row] || math.Abs(nb.Distance-w.Distance) > 1e-6 {
				t.Errorf("query %d rank %d: %+v, want row %d at %v", qi, r+1, nb, w.Row, w.Distance)
			}
		}
	}

	// Text output: a line per neighbour, rank, distance, label, path; k beyond N gives N.
	r = toolRun("search", "--index", idxPath, "--query", q1, "-k", "50")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 2+15 || lines[0] != "query "+q1 ||
		!regexp.MustCompile(`^1 +0\.0000\d\d +class0 +`+regexp.QuoteMeta(idx.Paths[2])+`$`).MatchString(lines[2]) {
		t.Errorf("search text: exit %d, %d lines:\n%s\nwant a header and 15 neighbour lines, the first the query itself", r.code, len(lines), r.stdout)
	}

	// From `pipeline embed`'s outputs: same embeddings, class names from the CSV, no model.
	npyPath := filepath.Join(dir, "e.npy")
	if r := toolRun("embed", "--model", model, "--data", root, "--out", npyPath); r.code != 0 {
		t.Fatalf("embed: exit %d\n%s", r.code, r.stderr)
	}
	idx2Path := filepath.Join(dir, "g2.idx")
	if r := toolRun("index", "--embeddings", npyPath, "--out", idx2Path); r.code != 0 || !strings.Contains(r.stdout, "(no model recorded)") {
		t.Fatalf("index --embeddings: exit %d, stdout %q\n%s", r.code, r.stdout, r.stderr)
	}
	idx2, err := gallery.Open(idx2Path)
	if err != nil {
		t.Fatal(err)
	}
	if idx2.Model.SHA256 != "" || fmt.Sprint(idx2.Labels) != fmt.Sprint(idx.Labels) || fmt.Sprint(idx2.Paths) != fmt.Sprint(idx.Paths) {
		t.Errorf("index --embeddings: labels %v, paths %v, model %+v; want those of the model index and no model", idx2.Labels, idx2.Paths, idx2.Model)
	}
	qnpy := filepath.Join(dir, "q.npy")
	if err := npy.Write(qnpy, want[2*3:3*3], 1, 3); err != nil {
		t.Fatal(err)
	}
	r = toolRun("search", "--index", idx2Path, "--query-npy", qnpy, "-k", "4", "--json")
	var res2 []searchResult
	if err := json.Unmarshal([]byte(r.stdout), &res2); err != nil || len(res2) != 1 || res2[0].Query != qnpy+"[0]" {
		t.Fatalf("search --query-npy: %v, %+v\n%s", err, res2, r.stderr)
	}
	for i, nb := range res2[0].Neighbors {
		if nb.Row != res[0].Neighbors[i].Row || math.Abs(nb.Distance-res[0].Neighbors[i].Distance) > 1e-6 {
			t.Errorf("--query-npy rank %d: %+v, want %+v", i+1, nb, res[0].Neighbors[i])
		}
	}
	if r := toolRun("search", "--index", idx2Path, "--query", q1); r.code != 2 || !strings.Contains(r.stderr, "records no model") {
		t.Errorf("query images on an index without a model: exit %d, %q; want 2 and a message", r.code, r.stderr)
	}
	if r := toolRun("search", "--index", idx2Path, "--query", q1, "--model", model, "-k", "1"); r.code != 0 ||
		!strings.Contains(r.stderr, "trusting") || !strings.Contains(r.stdout, idx.Paths[2]) {
		t.Errorf("--model on an index without one: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// Another model (same graph, other metadata: other SHA-256) is refused, and so is a moved one.
	m, err := onnxpb.Load(model)
	if err != nil {
		t.Fatal(err)
	}
	onnxpb.SetMetadata(m, "tool_version", "other")
	other := filepath.Join(dir, "other.onnx")
	if err := onnxpb.SaveAtomic(other, m); err != nil {
		t.Fatal(err)
	}
	if r := toolRun("search", "--index", idxPath, "--query", q1, "--model", other); r.code != 1 ||
		!strings.Contains(r.stderr, "is not the model the index") || !strings.Contains(r.stderr, other) {
		t.Errorf("other model: exit %d, %q", r.code, r.stderr)
	}
	moved := filepath.Join(dir, "moved.onnx")
	if err := os.WriteFile(moved, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	idx3Path := filepath.Join(dir, "g3.idx")
	if r := toolRun("index", "--model", moved, "--data", root, "--out", idx3Path); r.code != 0 {
		t.Fatalf("index: exit %d\n%s", r.code, r.stderr)
	}
	os.Remove(moved)
	if r := toolRun("search", "--index", idx3Path, "--query", q1); r.code != 1 || !strings.Contains(r.stderr, "give --model") {
		t.Errorf("moved model: exit %d, %q", r.code, r.stderr)
	}
	if r := toolRun("search", "--index", idx3Path, "--query", q1, "--model", model, "-k", "1"); r.code != 0 || !strings.Contains(r.stdout, idx.Paths[2]) {
		t.Errorf("moved model given with --model (same bytes): exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}

	// An unreadable query image names the file.
	bad := filepath.Join(dir, "bad.png")
	os.WriteFile(bad, []byte("not a png"), 0o644)
	if r := toolRun("search", "--index", idxPath, "--query", q1, "--query", bad); r.code != 1 || !strings.Contains(r.stderr, "bad.png") || r.stdout != "" {
		t.Errorf("unreadable query: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := toolRun("search", "--index", idxPath, "--query", filepath.Join(dir, "none.png")); r.code != 1 || !strings.Contains(r.stderr, "none.png") {
		t.Errorf("missing query: exit %d, %q", r.code, r.stderr)
	}
}

// TestIndexSearchCommandErrors: usage errors exit 2, bad files exit 1, each with a clear message;
// no onnxruntime needed.
func TestIndexSearchCommandErrors(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 1))
	emb := randomUnitRows(rng, 6, 4)
	npyPath := filepath.Join(dir, "e.npy")
	if err := npy.Write(npyPath, emb, 6, 4); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "e.csv"), []byte("path,label,class\na.png,0,cat\nb.png,0,cat\nc.png,1,dog\nd.png,1,dog\ne.png,2,eel\nf.png,2,eel\n"), 0o644)
	short := filepath.Join(dir, "short.csv")
	os.WriteFile(short, []byte("path,label\na.png,0\n"), 0o644)
	idx := filepath.Join(dir, "g.idx")
	if r := toolRun("index", "--embeddings", npyPath, "--out", idx, "--json"); r.code != 0 {
		t.Fatalf("index: exit %d\n%s", r.code, r.stderr)
	} else {
		var s indexSummary
		if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || s.Images != 6 || s.Classes != 3 || s.Dim != 4 || s.Bytes < 64+4*24+16 {
			t.Errorf("index --json: %+v (%v)", s, err)
		}
	}
	q3 := filepath.Join(dir, "q3.npy")
	npy.Write(q3, emb[:6], 2, 3)
	q4 := filepath.Join(dir, "q4.npy")
	npy.Write(q4, emb[4:12], 2, 4)
	corrupt := filepath.Join(dir, "corrupt.idx")
	raw, _ := os.ReadFile(idx)
	raw[70] ^= 1
	os.WriteFile(corrupt, raw, 0o644)

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"index", "--embeddings", npyPath}, 2, "needs --out"},
		{[]string{"index", "--out", idx}, 2, "index needs --model and --data, or --embeddings"},
		{[]string{"index", "--model", "m.onnx", "--out", idx}, 2, "both --model and --data"},
		{[]string{"index", "--embeddings", npyPath, "--data", dir, "--out", idx}, 2, "not both"},
		{[]string{"index", "--embeddings", npyPath, "--labels", short, "--out", filepath.Join(dir, "x.idx")}, 1, "6 rows but"},
		{[]string{"index", "--embeddings", filepath.Join(dir, "none.npy"), "--out", filepath.Join(dir, "x.idx")}, 1, "none.npy"},
		{[]string{"index", "--model", filepath.Join(dir, "none.onnx"), "--data", dir, "--out", filepath.Join(dir, "x.idx")}, 1, "none.onnx"},
		{[]string{"search", "--query-npy", q4}, 2, "needs --index"},
		{[]string{"search", "--index", idx}, 2, "needs --query IMG"},
		{[]string{"search", "--index", idx, "--query", "a.png", "--query-npy", q4}, 2, "not both"},
		{[]string{"search", "--index", idx, "--query-npy", q4, "-k", "0"}, 2, "-k 0, want >= 1"},
		{[]string{"search", "--index", idx, "--query-npy", q4, "-k", "-3"}, 2, "-k -3"},
		{[]string{"search", "--index", idx, "--query-npy", q4, "a.png"}, 2, `unexpected argument "a.png"`},
		{[]string{"search", "--index", idx, "--query-npy", q4, "--model", "m.onnx"}, 2, "--query-npy holds embeddings"},
		{[]string{"search", "--index", idx, "--query", "a.png"}, 2, "records no model"},
		{[]string{"search", "--index", filepath.Join(dir, "none.idx"), "--query-npy", q4}, 1, "none.idx"},
		{[]string{"search", "--index", corrupt, "--query-npy", q4}, 1, "checksum mismatch"},
		{[]string{"search", "--index", npyPath, "--query-npy", q4}, 1, "not a gallery index"},
		{[]string{"search", "--index", idx, "--query-npy", q3}, 1, "holds 3-d embeddings but the index"},
	} {
		r := toolRun(tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d naming %q", tc.args, r.code, r.stdout, r.stderr, tc.code, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.idx")); err == nil {
		t.Error("a failed index command wrote its output")
	}
	r := toolRun("search", "--index", idx, "--query-npy", q4, "-k", "2")
	if r.code != 0 || !strings.Contains(r.stdout, "query "+q4+"[1]") || strings.Count(r.stdout, "\n") != 2*(2+2)+1 {
		t.Errorf("search: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestAutoKMeansRestarts(t *testing.T) {
	for _, tc := range []struct{ n, k, d, want int }{
		{5924, 100, 512, 10},   // CUB-100 test half
		{8131, 98, 1280, 10},   // Cars196 test half, raw features
		{10000, 500, 512, 7},   // 2.56e9: 2e10/2.56e9 = 7.8
		{20000, 1000, 512, 1},  // 1.02e10
		{100000, 1000, 512, 1}, // the memory benchmark
		{60502, 11316, 512, 1}, // Stanford Online Products test half
		{2, 1, 1, 10},
	} {
		if got := autoKMeansRestarts(tc.n, tc.k, tc.d); got != tc.want {
			t.Errorf("autoKMeansRestarts(%d, %d, %d) = %d, want %d", tc.n, tc.k, tc.d, got, tc.want)
		}
	}
}

// TestBenchMemorySmall runs `pipeline bench-memory` at n = 2000 with this test binary as the
// child `pipeline` (see TestResumeChildProcess) and checks the report's fields.
func TestBenchMemorySmall(t *testing.T) {
	old := benchMemExec
	t.Cleanup(func() { benchMemExec = old })
	benchMemExec = func(ctx context.Context, args []string) (*exec.Cmd, error) {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestResumeChildProcess$", "-test.count=1")
		argv, _ := json.Marshal(args)
		cmd.Env = append(os.Environ(), "PIPELINE_TEST_CHILD_ARGS="+string(argv))
		return cmd, nil
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "mem.json")
	r := toolRun("bench-memory", "--n", "2000", "--dim", "64", "--classes", "40", "--queries", "7", "-k", "3",
		"--dir", filepath.Join(dir, "files"), "--out", out)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep benchMemReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.N != 2000 || rep.Dim != 64 || rep.Classes != 40 || rep.Queries != 7 || rep.K != 3 || !rep.GoalMet ||
		rep.GoalBytes != 2<<30 || rep.Machine.Cores < 1 || rep.Machine.CPU == "" {
		t.Errorf("report header: %+v", rep)
	}
	if want := int64(128 + 4*2000*64); rep.EmbeddingsBytes != want || rep.IndexBytes <= 64+4*2000*64+16 {
		t.Errorf("embeddings %d bytes (want %d), index %d bytes", rep.EmbeddingsBytes, want, rep.IndexBytes)
	}
	names := []string{"index", "search", "eval"}
	if len(rep.Commands) != 3 {
		t.Fatalf("%d commands, want 3: %+v", len(rep.Commands), rep.Commands)
	}
	for i, c := range rep.Commands {
		if c.Name != names[i] || c.Args[0] != names[i] || c.Seconds <= 0 || c.Seconds > 600 || c.UserSeconds <= 0 ||
			c.MaxRSSBytes < 4<<20 || c.MaxRSSBytes >= 2<<30 || !c.UnderGoal ||
			math.Abs(c.MaxRSSMiB-float64(c.MaxRSSBytes)/(1<<20)) > 0.05+1e-9 { // rounded to 0.1 MiB
			t.Errorf("command %d: %+v", i, c)
		}
	}
	// The matrix products: eval's two stages and search, each rated against its reference.
	p := rep.Products
	if p == nil || p.Kernel == "" || len(p.Reference) != 2 || len(p.Stages) != 3 || p.SearchSeconds <= 0 {
		t.Fatalf("products: %+v", p)
	}
	wantGFLOP := []float64{2 * 2000 * 2000 * 64 / 1e9, 0, 2 * 7 * 2000 * 64 / 1e9} // k-means: at least its seeding
	for i, name := range []string{"eval neighbors", "eval kmeans", "search"} {
		s := p.Stages[i]
		if s.Name != name || s.Seconds <= 0 || s.GFLOP < wantGFLOP[i] || (i != 1 && math.Abs(s.GFLOP-wantGFLOP[i]) > 1e-9) ||
			s.Ratio <= 0 || math.Abs(s.GFLOPS-s.GFLOP/s.Seconds) > 1e-9*s.GFLOPS {
			t.Errorf("stage %d: %+v, want %s with %.4f GFLOP", i, s, name, wantGFLOP[i])
		}
	}
	if p.Peak.GFLOPS > 0 && math.Abs(p.Stages[0].PeakFraction-p.Stages[0].GFLOPS/p.Peak.GFLOPS) > 1e-12 {
		t.Errorf("peak fraction %v, want %v / %v", p.Stages[0].PeakFraction, p.Stages[0].GFLOPS, p.Peak.GFLOPS)
	}
	// The files were kept in --dir, and they are what the children read.
	x, err := gallery.Open(filepath.Join(dir, "files", "gallery.idx"))
	if err != nil || x.Len() != 2000 || x.Labels[41] != "1" || !strings.HasSuffix(x.Paths[41], "/img0000041.jpg") {
		t.Errorf("gallery index: %v", err)
	}
	if r := toolRun("bench-memory", "--n", "10", "--classes", "20"); r.code != 2 {
		t.Errorf("--classes > --n: exit %d, want 2", r.code)
	}
}
