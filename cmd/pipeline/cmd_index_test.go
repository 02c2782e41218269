package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
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
