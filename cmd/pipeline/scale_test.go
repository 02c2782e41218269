package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/export"
	"github.com/grouploss/pipeline/pipeline/npy"
)

const (
	// runMainEnv makes the test binary run the pipeline command instead of the tests, so the
	// scale test can start workers as separate processes and SIGKILL one.
	runMainEnv = "PIPELINE_TEST_RUN_MAIN"
)

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// scaleModel exports the shared MobileNetV2 cut at its pooled features with L2 normalization
// and ImageNet preprocessing at 224x224: a real embedding model, untrained head.
func scaleModel(t testing.TB) string {
	t.Helper()
	bb, err := backbone.Open(testenv.Int8Model(t), backbone.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	path := filepath.Join(t.TempDir(), "model.onnx")
	meta := export.Metadata{Preprocess: data.DefaultPreprocess().Metadata(), ToolVersion: pipeline.Version, SourceSHA256: bb.Info().SHA256}
	if err := export.Write(path, bb.Cut(), bb.CutInfo(), []export.Layer{export.L2Normalize{}}, meta); err != nil {
		t.Fatal(err)
	}
	return path
}

// worker is a `pipeline worker` process whose log lines are kept.
type worker struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  []string
	done chan error
}

func startWorker(t testing.TB, name string, args ...string) *worker {
	t.Helper()
	w := &worker{name: name, done: make(chan error, 1)}
	w.cmd = exec.Command(os.Args[0], append([]string{"worker", "--name", name}, args...)...)
	w.cmd.Env = append(os.Environ(), runMainEnv+"=1")
	stderr, err := w.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			w.mu.Lock()
			w.log = append(w.log, sc.Text())
			w.mu.Unlock()
		}
		w.done <- w.cmd.Wait()
	}()
	t.Cleanup(func() {
		w.cmd.Process.Kill()
	})
	return w
}

// count returns how many log lines contain s.
func (w *worker) count(s string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, l := range w.log {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// TestScaleQueue is the multi-process run: a coordinator submits CUB images (twice: the second
// submission queues nothing), three worker processes embed them, one is SIGKILLed in the middle
// of a batch, the coordinator collects; the result equals single-process `pipeline embed` row
// for row; it is loaded into PostgreSQL + pgvector, whose exact search returns the flat index's
// neighbours.
func TestScaleQueue(t *testing.T) {
	natsURL := testenv.NATSURL(t)
	if testing.Short() {
		t.Skip("the multi-process run takes a minute or more: not with -short")
	}
	needORT(t)
	pgURL := testenv.Postgres(t)
	images := 200
	if s := os.Getenv("PIPELINE_SCALE_IMAGES"); s != "" {
		images, _ = strconv.Atoi(s)
	}
	manifest := testenv.SmallCUB(t, images/10, 10)
	model := scaleModel(t)
	dir := t.TempDir()
	common := []string{"--model", model, "--data", manifest, "--batch-size", "8", "--threads", "1", "--workers", "1"}

	ref := filepath.Join(dir, "ref.npy")
	if r := toolRun(append([]string{"embed", "--out", ref}, common...)...); r.code != 0 {
		t.Fatalf("single-process embed: exit %d\n%s", r.code, r.stderr)
	}
	sub := toolRun(append([]string{"embed", "--queue", natsURL, "--submit"}, common...)...)
	if sub.code != 0 || !strings.Contains(sub.stdout, fmt.Sprintf("%d images in %d batches", images, images/8)) {
		t.Fatalf("submit: exit %d\n%s%s", sub.code, sub.stdout, sub.stderr)
	}
	if again := toolRun(append([]string{"embed", "--queue", natsURL, "--submit"}, common...)...); again.code != 0 ||
		!strings.Contains(again.stdout, fmt.Sprintf("(%d batches were already queued)", images/8)) {
		t.Fatalf("duplicate submission: exit %d\n%s%s", again.code, again.stdout, again.stderr)
	}

	wargs := []string{"--queue", natsURL, "--model", model, "--batch-size", "8", "--threads", "1", "--workers", "1",
		"--ack-wait", "3s", "--idle", "30s"}
	var ws []*worker
	for i := range 3 {
		ws = append(ws, startWorker(t, fmt.Sprintf("w%d", i+1), wargs...))
	}
	// Kill w1 while it embeds its second batch: started, not done.
	victim := ws[0]
	deadline := time.Now().Add(3 * time.Minute)
	for victim.count(": started") < 2 || victim.count(": started") == victim.count(": done") {
		if time.Now().After(deadline) {
			t.Fatalf("w1 never started a second batch:\n%s", strings.Join(victim.log, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	victim.cmd.Process.Signal(syscall.SIGKILL)
	<-victim.done
	t.Logf("SIGKILLed w1 after %d finished batches, in the middle of its next one", victim.count(": done"))

	got := filepath.Join(dir, "got.npy")
	col := toolRun(append([]string{"embed", "--queue", natsURL, "--collect", "--out", got, "--wait", "5m"}, common...)...)
	if col.code != 0 {
		t.Fatalf("collect: exit %d\n%s", col.code, col.stderr)
	}
	m := regexp.MustCompile(`(\d+) duplicates dropped, (\d+) redelivered batches`).FindStringSubmatch(col.stderr)
	if m == nil || m[2] == "0" {
		t.Errorf("collect summary: want at least one redelivered batch (w1's):\n%s", col.stderr)
	}
	for _, w := range ws[1:] {
		w.cmd.Process.Signal(syscall.SIGTERM)
		if err := <-w.done; err != nil {
			t.Errorf("worker %s after SIGTERM: %v\n%s", w.name, err, strings.Join(w.log, "\n"))
		}
	}
	t.Logf("collect: %s", m[0])

	want, n, d, err := npy.Read(ref)
	if err != nil {
		t.Fatal(err)
	}
	have, n2, d2, err := npy.Read(got)
	if err != nil {
		t.Fatal(err)
	}
	if n != images || n2 != n || d2 != d {
		t.Fatalf("collected (%d, %d), single-process (%d, %d), want %d rows", n2, d2, n, d, images)
	}
	var worst float64
	for i := range want {
		worst = math.Max(worst, math.Abs(float64(have[i]-want[i])))
	}
	if worst > 1e-6 {
		t.Errorf("collected embeddings differ from single-process ones by %.3g (> 1e-6)", worst)
	}
	refCSV, _ := os.ReadFile(labelsPath(ref))
	gotCSV, _ := os.ReadFile(labelsPath(got))
	if string(refCSV) != string(gotCSV) || len(refCSV) == 0 {
		t.Errorf("labels CSV of the collected run differs from the single-process one")
	}
	t.Logf("%d x %d embeddings, max |collected - single-process| = %.3g", n, d, worst)

	// The gallery in PostgreSQL: exact search equals the flat index.
	if r := toolRun("index", "--embeddings", got, "--to", pgURL, "--table", "scale_test"); r.code != 0 {
		t.Fatalf("index --to: exit %d\n%s", r.code, r.stderr)
	}
	flat := filepath.Join(dir, "flat.idx")
	if r := toolRun("index", "--embeddings", ref, "--out", flat); r.code != 0 {
		t.Fatalf("index --out: exit %d\n%s", r.code, r.stderr)
	}
	const nq = 20
	queries := filepath.Join(dir, "queries.npy")
	if err := npy.Write(queries, want[:nq*d], nq, d); err != nil {
		t.Fatal(err)
	}
	search := func(args ...string) []searchResult {
		r := toolRun(append([]string{"search", "--query-npy", queries, "-k", "10", "--json"}, args...)...)
		if r.code != 0 {
			t.Fatalf("search %v: exit %d\n%s", args, r.code, r.stderr)
		}
		var res []searchResult
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	fres := search("--index", flat)
	pres := search("--index", pgURL, "--table", "scale_test", "--exact")
	hres := search("--index", pgURL, "--table", "scale_test")
	hits := 0
	for q := range nq {
		for r, fn := range fres[q].Neighbors {
			pn := pres[q].Neighbors[r]
			if math.Abs(pn.Distance-fn.Distance) > 1e-5 || (pn.Path != fn.Path && !tiedAt(fres[q].Neighbors, pn.Path, fn.Distance)) {
				t.Fatalf("query %d rank %d: pgvector exact %s at %.6f, flat index %s at %.6f", q, r+1, pn.Path, pn.Distance, fn.Path, fn.Distance)
			}
			for _, hn := range hres[q].Neighbors {
				if hn.Path == fn.Path {
					hits++
				}
			}
		}
	}
	t.Logf("pgvector exact search = flat index on %d queries; HNSW (ef_search 40) recall@10 = %.3f", nq, float64(hits)/float64(nq*10))

	// A gallery built with --model records it: a query image is embedded with it and finds itself.
	few := filepath.Join(dir, "few.csv")
	lines := strings.SplitAfter(string(refCSV), "\n")
	if err := os.WriteFile(few, []byte(strings.Join(lines[:11], "")), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := toolRun("index", "--model", model, "--data", few, "--to", pgURL, "--table", "scale_model", "--threads", "1"); r.code != 0 {
		t.Fatalf("index --model --to: exit %d\n%s", r.code, r.stderr)
	}
	img := strings.Split(lines[3], ",")[0]
	r := toolRun("search", "--index", pgURL, "--table", "scale_model", "--query", img, "-k", "1", "--json")
	var res []searchResult
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || len(res) != 1 || res[0].Neighbors[0].Path != img ||
		res[0].Neighbors[0].Distance > 1e-5 {
		t.Errorf("search of a gallery image by file: exit %d, %s%s; want itself at distance 0", r.code, r.stdout, r.stderr)
	}
}

// tiedAt reports whether path is among the neighbours at distance dist (within 1e-5): a tie
// the two searches may order differently.
func tiedAt(nb []searchNeighbor, path string, dist float64) bool {
	for _, n := range nb {
		if n.Path == path && math.Abs(n.Distance-dist) <= 1e-5 {
			return true
		}
	}
	return false
}

// BenchmarkQueueWorkers measures images/s of the queue with 1, 2 and 3 worker processes (each
// one onnxruntime thread and one decoding goroutine, batches of 8), from submission to the
// collected file, against single-process `pipeline embed` with the same settings in the same
// run (workers=0). Each run has a fresh nats-server of its own. $PIPELINE_SCALE_IMAGES images
// (default 96).
func BenchmarkQueueWorkers(b *testing.B) {
	testenv.NATSServer(b)
	testenv.ORTLibrary(b)
	images := 96
	if s := os.Getenv("PIPELINE_SCALE_IMAGES"); s != "" {
		images, _ = strconv.Atoi(s)
	}
	manifest := testenv.SmallCUB(b, images/8, 8)
	model := scaleModel(b)
	common := []string{"--model", model, "--data", manifest, "--batch-size", "8", "--threads", "1", "--workers", "1"}
	for _, n := range []int{0, 1, 2, 3} {
		b.Run(fmt.Sprintf("workers=%d", n), func(b *testing.B) {
			for range b.N {
				out := filepath.Join(b.TempDir(), "e.npy")
				start := time.Now()
				if n == 0 {
					if r := toolRun(append([]string{"embed", "--out", out}, common...)...); r.code != 0 {
						b.Fatalf("embed: %s", r.stderr)
					}
				} else {
					srv := testenv.StartNATS(b)
					if r := toolRun(append([]string{"embed", "--queue", srv.URL(), "--submit"}, common...)...); r.code != 0 {
						b.Fatalf("submit: %s", r.stderr)
					}
					var ws []*worker
					for i := range n {
						ws = append(ws, startWorker(b, fmt.Sprintf("w%d", i+1), "--queue", srv.URL(), "--model", model,
							"--batch-size", "8", "--threads", "1", "--workers", "1"))
					}
					if r := toolRun(append([]string{"embed", "--queue", srv.URL(), "--collect", "--out", out, "--wait", "10m"}, common...)...); r.code != 0 {
						b.Fatalf("collect: %s", r.stderr)
					}
					for _, w := range ws {
						w.cmd.Process.Signal(syscall.SIGTERM)
						<-w.done
					}
				}
				b.ReportMetric(float64(images)/time.Since(start).Seconds(), "images/s")
			}
		})
	}
}
