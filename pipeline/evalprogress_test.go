package pipeline

import (
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/pipeline/metrics"
)

// TestEvalProgress: an evaluation with EvalProgress prints, on a writer that is not a terminal,
// lines at every 10% of the queries and a final line per stage with the stage's count; the
// metrics are those of an evaluation without progress.
func TestEvalProgress(t *testing.T) {
	if EvalProgress(io.Discard, "x") != nil || EvalProgress(nil, "x") != nil {
		t.Error("EvalProgress on io.Discard or nil is not nil")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const n, d = 200, 8
	x := make([]float32, n*d)
	labels := make([]int, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64()) + float32(i/d%5)
	}
	for i := range labels {
		labels[i] = i % 5
	}
	o := metrics.Options{KMeansRestarts: 3, Seed: 1, BlockSize: 10, Workers: 2}
	want, err := metrics.Evaluate(x, n, d, labels, o)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	o.Progress = EvalProgress(&buf, "trained")
	got, err := metrics.Evaluate(x, n, d, labels, o)
	if err != nil || got != want {
		t.Fatalf("with progress %+v (%v), without %+v", got, err, want)
	}
	out := buf.String()
	for _, s := range []string{"evaluate trained: neighbours (queries): 200 done in ", "evaluate trained: k-means (restarts): 3 done in ",
		"evaluate trained: neighbours (queries): 20/200 (10%)", "evaluate trained: neighbours (queries): 180/200 (90%)"} {
		if !strings.Contains(out, s) {
			t.Errorf("progress output lacks %q:\n%s", s, out)
		}
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for _, l := range lines {
		if !strings.HasPrefix(l, "evaluate trained: ") {
			t.Errorf("progress line %q", l)
		}
	}
	if len(lines) > 2*10 { // data.Progress prints at most each tenth and the end of a stage
		t.Errorf("%d lines of progress:\n%s", len(lines), out)
	}
}
