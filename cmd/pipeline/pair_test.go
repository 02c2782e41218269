package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/gallery"
	"github.com/grouploss/pipeline/pipeline/npy"
)

// writeTestPair writes an embed-style pair (rows x 2 embeddings, one class per row) with the model
// identity model into dir/name.npy and dir/name.csv.
func writeTestPair(t *testing.T, dir, name string, rows int, scale float32, model string) (npyPath, csv string) {
	t.Helper()
	ds := &data.Dataset{Root: dir}
	x := make([]float32, rows*2)
	for i := range rows {
		ds.Classes = append(ds.Classes, string(rune('a'+i)))
		ds.Items = append(ds.Items, data.Item{Path: string(rune('a'+i)) + ".jpg", Label: i, Class: ds.Classes[i]})
		x[2*i], x[2*i+1] = scale*float32(i+1), 1
	}
	npyPath, csv = filepath.Join(dir, name+".npy"), filepath.Join(dir, name+".csv")
	err := writePair(npyPath, csv, func(p string) error { return npy.Write(p, x, rows, 2) },
		func(p, sha string) error { return writeLabels(p, ds, pairIdentity{NPY: sha, Model: model}) })
	if err != nil {
		t.Fatal(err)
	}
	return npyPath, csv
}

// TestEmbedPair: the .npy and .csv of embed are written both or neither (a failed .csv write left
// a new .csv beside the old .npy), and index/eval refuse a .csv that belongs to another .npy
// (index --embeddings accepted the mismatched pair).
func TestEmbedPair(t *testing.T) {
	dir := t.TempDir()
	npyPath, csv := writeTestPair(t, dir, "a", 4, 1, "m1")
	oldNPY, _ := os.ReadFile(npyPath)
	oldCSV, _ := os.ReadFile(csv)
	// A failure while writing the second file (a full disk): the old pair stays, no temporary file.
	full := errors.New("no space left on device")
	err := writePair(npyPath, csv, func(p string) error { return npy.Write(p, make([]float32, 6), 3, 2) },
		func(string, string) error { return full })
	if !errors.Is(err, full) {
		t.Fatalf("writePair: %v", err)
	}
	if b, _ := os.ReadFile(npyPath); !bytes.Equal(b, oldNPY) {
		t.Fatal("the .npy changed although its .csv could not be written")
	}
	if b, _ := os.ReadFile(csv); !bytes.Equal(b, oldCSV) {
		t.Fatal("the .csv changed")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("files left: %v", entries)
	}
	if _, err := checkPair(npyPath, csv, false); err != nil {
		t.Fatalf("a pair written together: %v", err)
	}
	// The .csv of another embed run (same row count) beside this .npy.
	_, csvB := writeTestPair(t, t.TempDir(), "b", 4, 2, "m1")
	b, _ := os.ReadFile(csvB)
	os.WriteFile(csv, b, 0o644)
	_, err = runIndex(context.Background(), indexOptions{embedderFlags: embedderFlags{batchSize: 1}, embeddings: npyPath, out: filepath.Join(dir, "g.idx")}, nil)
	if !errors.Is(err, errPairMismatch) || !strings.Contains(err.Error(), npyPath) {
		t.Fatalf("index --embeddings with a mismatched pair: %v", err)
	}
	_, err = runEval(context.Background(), evalOptions{embedderFlags: embedderFlags{batchSize: 1}, embeddings: npyPath, kmeansRestarts: 1}, nil)
	if !errors.Is(err, errPairMismatch) {
		t.Fatalf("eval --embeddings with a mismatched pair: %v", err)
	}
	// A hand-written .csv without the identity columns is still accepted.
	os.WriteFile(csv, []byte("path,label\na.jpg,0\nb.jpg,1\nc.jpg,2\nd.jpg,3\n"), 0o644)
	if _, err := runIndex(context.Background(), indexOptions{embedderFlags: embedderFlags{batchSize: 1}, embeddings: npyPath, out: filepath.Join(dir, "g.idx")}, nil); err != nil {
		t.Fatalf("index with a plain labels file: %v", err)
	}
}

// TestSearchQueryNPYModel: --query-npy embeddings computed by another model than the index's are
// refused (they were accepted silently; --query images check the model's hash).
func TestSearchQueryNPYModel(t *testing.T) {
	dir := t.TempDir()
	x := []float32{1, 0, 0, 1}
	idx, err := gallery.New(x, 2, []string{"/a.jpg", "/b.jpg"}, []string{"a", "b"}, gallery.Model{Path: "/m.onnx", SHA256: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	index := filepath.Join(dir, "g.idx")
	if err := gallery.Write(index, idx); err != nil {
		t.Fatal(err)
	}
	same, _ := writeTestPair(t, dir, "same", 2, 1, "m1")
	other, _ := writeTestPair(t, dir, "other", 2, 1, "m2")
	var log bytes.Buffer
	if _, err := runSearch(context.Background(), searchOptions{index: index, queryNPY: same, k: 1, batchSize: 1}, &log); err != nil {
		t.Fatalf("queries of the index's model: %v", err)
	}
	_, err = runSearch(context.Background(), searchOptions{index: index, queryNPY: other, k: 1, batchSize: 1}, &log)
	if err == nil || !strings.Contains(err.Error(), "not comparable") {
		t.Fatalf("queries of another model: %v", err)
	}
}

// TestSearchTextEscapesNames: newlines in file or class names are quoted in the text output
// (a crafted name added fake result lines).
func TestSearchTextEscapesNames(t *testing.T) {
	var b bytes.Buffer
	printSearch(&b, []searchResult{{Query: "q\nquery fake", Neighbors: []searchNeighbor{{Rank: 1, Label: "c\n2\t0.0", Path: "/x\n3\t0.000000\tfake\t/y"}}}})
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3 (query, header, one neighbour):\n%s", len(lines), b.String())
	}
}

// TestEvalKMeansRestartsBound: --kmeans-restarts 1e9 is a usage error before anything runs (it
// allocated a record per restart: out of memory).
func TestEvalKMeansRestartsBound(t *testing.T) {
	dir := t.TempDir()
	npyPath, _ := writeTestPair(t, dir, "a", 4, 1, "m1")
	_, err := runEval(context.Background(), evalOptions{embedderFlags: embedderFlags{batchSize: 1}, embeddings: npyPath, kmeansRestarts: 1e9}, nil)
	if !errors.Is(err, errUsage) {
		t.Fatalf("got %v, want a usage error", err)
	}
}
