package main

import (
	"encoding/csv"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/infer"
	"github.com/grouploss/pipeline/pipeline/metrics"
	"github.com/grouploss/pipeline/pipeline/npy"
)

// toolEmbedWant returns the Embedder's embeddings of the dataset's files (n x 3) and its labels.
func toolEmbedWant(t *testing.T, model, root string) (*data.Dataset, []float32) {
	t.Helper()
	ds, err := data.Load(root)
	if err != nil {
		t.Fatal(err)
	}
	paths := make([]string, len(ds.Items))
	for i := range paths {
		paths[i] = ds.Resolve(i)
	}
	e, err := infer.OpenEmbedder(model)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rows, err := e.EmbedFiles(paths)
	if err != nil {
		t.Fatal(err)
	}
	var flat []float32
	for _, r := range rows {
		flat = append(flat, r...)
	}
	return ds, flat
}

// TestEmbedCommand: `pipeline embed` writes the Embedder's embeddings as (N, 3) float32 .npy
// (checked with ReadNPY and, when available, numpy) and the labels CSV beside it.
func TestEmbedCommand(t *testing.T) {
	needORT(t)
	model := toolModel(t)
	root := toolDataset(t, 5, 4, 6)
	out := filepath.Join(t.TempDir(), "sub", "emb.npy")
	r := toolRun("embed", "--model", model, "--data", root, "--out", out, "--batch-size", "4", "--workers", "2")
	if r.code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "wrote 15 embeddings of dim 3 to "+out) || !strings.Contains(r.stderr, "embed: 15 done") {
		t.Errorf("stdout %q, stderr %q: want the summary and the progress", r.stdout, r.stderr)
	}
	ds, want := toolEmbedWant(t, model, root)
	got, n, d, err := npy.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	if n != 15 || d != 3 {
		t.Fatalf("shape (%d, %d), want (15, 3)", n, d)
	}
	var worst float64
	for i := range want {
		worst = math.Max(worst, math.Abs(float64(got[i]-want[i])))
	}
	if worst > 1e-6 {
		t.Errorf("embeddings differ from Embedder.EmbedFiles by %.3g (> 1e-6)", worst)
	}
	for i := range n {
		var sq float64
		for _, v := range got[i*d : (i+1)*d] {
			sq += float64(v) * float64(v)
		}
		if math.Abs(math.Sqrt(sq)-1) > 1e-5 {
			t.Errorf("row %d has norm %.6f, want 1", i, math.Sqrt(sq))
		}
	}

	f, err := os.Open(filepath.Join(filepath.Dir(out), "emb.csv"))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 16 || strings.Join(recs[0], ",") != "path,label,class,npy_sha256,model_sha256" {
		t.Fatalf("labels CSV: %d lines, header %v; want 16 and path,label,class,npy_sha256,model_sha256", len(recs), recs[0])
	}
	if _, err := checkPair(out, labelsPath(out), false); err != nil {
		t.Fatalf("the pair embed wrote: %v", err)
	}
	for i, rec := range recs[1:] {
		it := ds.Items[i]
		abs, _ := filepath.Abs(ds.Resolve(i))
		if rec[0] != filepath.ToSlash(abs) || rec[1] != strconv.Itoa(it.Label) || rec[2] != it.Class {
			t.Errorf("CSV row %d = %v, want %s,%d,%s", i, rec, abs, it.Label, it.Class)
		}
	}

	if err := exec.Command("/usr/bin/python3", "-c", "import numpy").Run(); err != nil {
		t.Log("/usr/bin/python3 with numpy not found (apt-get install python3-numpy): numpy check skipped")
		return
	}
	py, err := exec.Command("/usr/bin/python3", "-c", `import sys, numpy
a = numpy.load(sys.argv[1])
print(a.shape, a.dtype, repr(float(a[7, 1])))`, out).CombinedOutput()
	if err != nil {
		t.Fatalf("numpy.load: %v\n%s", err, py)
	}
	f7 := strings.Fields(string(py))
	v, err := strconv.ParseFloat(f7[len(f7)-1], 64)
	if !strings.HasPrefix(string(py), "(15, 3) float32 ") || err != nil || float32(v) != got[7*3+1] {
		t.Errorf("numpy sees %q, want shape (15, 3), float32 and a[7, 1] = %v", py, got[7*3+1])
	}
}

func TestEmbedCommandErrors(t *testing.T) {
	needORT(t)
	model := toolModel(t)
	root := toolDataset(t, 2, 2)
	dir := t.TempDir()
	out := filepath.Join(dir, "e.npy")
	if err := os.WriteFile(out, []byte("previous"), 0o644); err != nil {
		t.Fatal(err)
	}
	badRoot := toolDataset(t, 2, 2)
	badFile := filepath.Join(badRoot, "class1", "99.png")
	if err := os.WriteFile(badFile, []byte("not a png"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--data", root, "--out", out}, 2, "needs --model, --data and --out"},
		{[]string{"--model", model, "--data", root, "--out", filepath.Join(dir, "e.bin")}, 2, "must end in .npy"},
		{[]string{"--model", model, "--data", root, "--out", out, "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"--model", toolTinyCNN, "--data", root, "--out", out}, 1, "preprocess.size"},
		{[]string{"--model", model, "--data", filepath.Join(dir, "none"), "--out", out}, 1, "--data must be"},
		{[]string{"--model", model, "--data", badRoot, "--out", out}, 1, "99.png"},
	} {
		r := toolRun(append([]string{"embed"}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d naming %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
		if b, _ := os.ReadFile(out); string(b) != "previous" {
			t.Errorf("%v: the existing %s was changed by a failed run", tc.args, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "e.csv")); err == nil {
			t.Errorf("%v: a failed run wrote e.csv", tc.args)
		}
	}
	if r := toolRun("embed", "--model", toolTinyCNN, "--data", root, "--out", out); !strings.Contains(r.stderr, "hint: ") {
		t.Errorf("model without metadata: no hint in %q", r.stderr)
	}
}

// TestEvalCommand: `pipeline eval` from the model and data, and from the .npy and .csv that
// `pipeline embed` wrote, gives metrics.Evaluate's numbers on the Embedder's embeddings.
func TestEvalCommand(t *testing.T) {
	needORT(t)
	model := toolModel(t)
	root := toolDataset(t, 6, 5, 7, 4)
	ds, emb := toolEmbedWant(t, model, root)
	labels := ds.Labels(allItems(len(ds.Items)))
	want, err := metrics.Evaluate(emb, len(labels), 3, labels, metrics.Options{KMeansRestarts: 3, Seed: 5, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if want.RecallAt1 == 0 || want.NMI == 0 {
		t.Fatalf("degenerate test data: %+v", want)
	}

	r := toolRun("eval", "--model", model, "--data", root, "--json", "--kmeans-restarts", "3", "--seed", "5")
	if r.code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", r.code, r.stderr)
	}
	var rep evalReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if rep.Images != 22 || rep.Classes != 4 || rep.Dim != 3 || rep.Metrics != want {
		t.Errorf("eval --model: %+v, want 22 images, 4 classes, dim 3, metrics %+v", rep, want)
	}

	npy := filepath.Join(t.TempDir(), "e.npy")
	if r := toolRun("embed", "--model", model, "--data", root, "--out", npy); r.code != 0 {
		t.Fatalf("embed: exit %d\n%s", r.code, r.stderr)
	}
	r = toolRun("eval", "--embeddings", npy, "--kmeans-restarts", "3", "--seed", "5")
	if r.code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"22 images, 4 classes, 3-d embeddings", "Recall@1     " + strconv.FormatFloat(want.RecallAt1, 'f', 4, 64),
		"Recall@8     " + strconv.FormatFloat(want.RecallAt8, 'f', 4, 64), "NMI          " + strconv.FormatFloat(want.NMI, 'f', 4, 64),
		"MAP@R        " + strconv.FormatFloat(want.MAPAtR, 'f', 4, 64), "R-precision  " + strconv.FormatFloat(want.RPrecision, 'f', 4, 64)} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, r.stdout)
		}
	}
	r = toolRun("eval", "--embeddings", npy, "--labels", strings.TrimSuffix(npy, ".npy")+".csv", "--json", "--kmeans-restarts", "3", "--seed", "5")
	rep = evalReport{}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || rep.Metrics != want {
		t.Errorf("eval --embeddings --labels: %+v (%v), want metrics %+v", rep, err, want)
	}

	// Mismatched or malformed inputs.
	short := filepath.Join(t.TempDir(), "short.csv")
	os.WriteFile(short, []byte("path,label\na.png,0\nb.png,1\n"), 0o644)
	f8 := filepath.Join(t.TempDir(), "f8.npy")
	raw, _ := os.ReadFile(npy)
	os.WriteFile(f8, []byte(strings.Replace(string(raw), "'<f4'", "'<f8'", 1)), 0o644)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--model", model}, 2, "both --model and --data"},
		{[]string{"--model", model, "--data", root, "--embeddings", npy}, 2, "not both"},
		{[]string{}, 2, "eval needs"},
		{[]string{"--model", model, "--data", root, "--labels", short}, 2, "--labels goes with --embeddings"},
		{[]string{"--embeddings", npy, "--labels", short}, 1, "22 rows but"},
		{[]string{"--embeddings", f8, "--labels", short}, 1, `dtype "<f8"`},
		{[]string{"--embeddings", filepath.Join(t.TempDir(), "x.npy")}, 1, "x.npy"},
	} {
		r := toolRun(append([]string{"eval"}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("%v: exit %d, stderr %q; want exit %d naming %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
}
