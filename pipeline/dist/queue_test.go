package dist

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline/data"
)

// hashEmbedder embeds a path as 4 floats derived from its SHA-256 (a stand-in for the model:
// these tests are about delivery, the command tests compare real onnxruntime embeddings), after
// delay per batch. It counts the images it embedded.
type hashEmbedder struct {
	delay time.Duration
	mu    sync.Mutex
	seen  int
}

func (e *hashEmbedder) Dim() int { return 4 }

func (e *hashEmbedder) EmbedDataset(ctx context.Context, ds *data.Dataset, _ io.Writer) ([]float32, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(e.delay):
	}
	out := make([]float32, 0, 4*len(ds.Items))
	for i := range ds.Items {
		out = append(out, hashVec(ds.Resolve(i))...)
	}
	e.mu.Lock()
	e.seen += len(ds.Items)
	e.mu.Unlock()
	return out, nil
}

func hashVec(p string) []float32 {
	h := sha256.Sum256([]byte(p))
	v := make([]float32, 4)
	for k := range v {
		v[k] = float32(binary.LittleEndian.Uint16(h[2*k:])) / 65536
	}
	return v
}

var testModel = hex.EncodeToString(make([]byte, 32))

// testJob is a job of n made-up absolute paths (unique to the test) in batches of batch.
func testJob(t *testing.T, n, batch int) Job {
	t.Helper()
	ds := &data.Dataset{Classes: []string{"a"}}
	for i := range n {
		ds.Items = append(ds.Items, data.Item{Path: fmt.Sprintf("/img/%s/%03d.jpg", t.Name(), i)})
	}
	j, err := NewJob(testModel, ds, allIdx(n), batch)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func allIdx(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

func connect(t *testing.T, url, name string) *Queue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := Connect(ctx, url, Options{AckWait: 2 * time.Second, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

// checkCollected fails unless emb holds hashVec of each job item, in job order.
func checkCollected(t *testing.T, j Job, emb []float32, dim int) {
	t.Helper()
	if dim != 4 || len(emb) != 4*len(j.Items) {
		t.Fatalf("collected %d values of dim %d, want %d x 4", len(emb), dim, len(j.Items))
	}
	for i, it := range j.Items {
		want := hashVec(it.Path)
		for k := range want {
			if emb[i*4+k] != want[k] {
				t.Fatalf("row %d (%s) = %v, want %v", i, it.Path, emb[i*4:i*4+4], want)
			}
		}
	}
}

// TestQueueAtLeastOnce: a batch taken by a worker that dies without acking is redelivered after
// the ack wait and embedded by another worker; a second submission of the same job queues
// nothing; the collected rows are in job order, each once.
func TestQueueAtLeastOnce(t *testing.T) {
	srv := testenv.StartNATS(t)
	coord := connect(t, srv.URL(), "coordinator")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	j := testJob(t, 37, 5)
	s, err := coord.Submit(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	if s.Batches != 8 || s.Duplicates != 0 {
		t.Fatalf("first submission: %+v, want 8 batches, 0 duplicates", s)
	}
	if s, err = coord.Submit(ctx, j); err != nil || s.Duplicates != 8 {
		t.Fatalf("second submission of the same job: %+v, %v: want all 8 batches dropped as duplicates", s, err)
	}

	// The dying worker: it takes a batch and its connection goes away without an ack, as a
	// SIGKILLed process's would.
	dying := connect(t, srv.URL(), "dying")
	stuck := &hashEmbedder{delay: time.Hour}
	wctx, wcancel := context.WithCancel(ctx)
	died := make(chan struct{})
	go func() {
		defer close(died)
		dying.Work(wctx, WorkerConfig{Model: testModel, Embed: stuck})
	}()
	time.Sleep(500 * time.Millisecond)
	dying.nc.Close()
	wcancel()
	<-died

	live := &hashEmbedder{}
	worker := connect(t, srv.URL(), "live")
	ws, err := worker.Work(ctx, WorkerConfig{Model: testModel, Embed: live, Idle: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if ws.Images != 37 || ws.Redelivered < 1 {
		t.Errorf("worker stats %+v: want all 37 images, at least one redelivered batch", ws)
	}
	emb, dim, cs, err := coord.Collect(ctx, j, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkCollected(t, j, emb, dim)
	if cs.Redelivered < 1 || cs.Workers["live"] != 8 {
		t.Errorf("collect summary %+v: want 8 results from live, at least one redelivered", cs)
	}
}

// TestQueueDuplicateResults: results published twice for a batch (a redelivery after the
// result was stored but before the ack landed, past the duplicate window) are dropped by the
// collector.
func TestQueueDuplicateResults(t *testing.T) {
	srv := testenv.StartNATS(t)
	q := connect(t, srv.URL(), "w")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	j := testJob(t, 6, 4)
	for _, b := range []int{0, 1, 0} {
		w := j.Batch(b)
		e := &hashEmbedder{}
		ds := &data.Dataset{Classes: []string{""}}
		for _, it := range w.Items {
			ds.Items = append(ds.Items, data.Item{Path: it.Path})
		}
		emb, _ := e.EmbedDataset(ctx, ds, nil)
		r := Result{Job: j.ID, Batch: b, Model: testModel, Worker: "w", Delivery: 1, Items: w.Items, Dim: 4, Embeddings: emb}
		// A fresh message ID each time, as if the server had forgotten the first one.
		if _, err := q.publish(ctx, resultSubject+"."+j.ID, fmt.Sprintf("%s-%d", msgID(j.ID, b), time.Now().UnixNano()), r); err != nil {
			t.Fatal(err)
		}
	}
	emb, dim, cs, err := q.Collect(ctx, j, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkCollected(t, j, emb, dim)
	if cs.Results < 2 || cs.Duplicates > cs.Results-2 {
		t.Errorf("collect summary %+v: want the duplicate of batch 0 dropped", cs)
	}
}

// TestQueueRejects: the collector fails clearly on a worker's error and on another model's
// result; a worker hands back another model's batch.
func TestQueueRejects(t *testing.T) {
	srv := testenv.StartNATS(t)
	q := connect(t, srv.URL(), "w")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	j := testJob(t, 3, 3)
	w := j.Batch(0)
	r := Result{Job: j.ID, Batch: 0, Model: testModel, Worker: "w", Items: w.Items, Dim: 4,
		Error: `pipeline: embed: image "/img/x.jpg": not a JPEG`}
	if _, err := q.publish(ctx, resultSubject+"."+j.ID, msgID(j.ID, 0), r); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := q.Collect(ctx, j, nil); err == nil || !strings.Contains(err.Error(), "not a JPEG") {
		t.Errorf("collect of a failed batch: %v, want the worker's error", err)
	}

	other := testJob(t, 4, 4)
	other.Model = strings.Repeat("ab", 32)
	other.ID += "x"
	if _, err := q.Submit(ctx, other); err != nil {
		t.Fatal(err)
	}
	ws, err := q.Work(ctx, WorkerConfig{Model: testModel, Embed: &hashEmbedder{}, Idle: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if ws.Refused < 1 || ws.Images != 0 {
		t.Errorf("worker of another model: %+v, want the batch refused, nothing embedded", ws)
	}
	short, scancel := context.WithTimeout(ctx, 3*time.Second)
	defer scancel()
	if _, _, _, err := q.Collect(short, other, nil); err == nil || !strings.Contains(err.Error(), "4 of 4 images still missing") {
		t.Errorf("collect with no result: %v, want the missing count", err)
	}
}

// TestQueueServerRestart: the server restarts mid-run, stopped gracefully (SIGTERM) or killed
// (SIGKILL), then started again on the same file store: the queued batches and stored results
// survive, the worker and the collector reconnect and finish the job.
func TestQueueServerRestart(t *testing.T) {
	for _, kill := range []bool{false, true} {
		t.Run(map[bool]string{false: "SIGTERM", true: "SIGKILL"}[kill], func(t *testing.T) {
			srv := testenv.StartNATS(t)
			coord := connect(t, srv.URL(), "coordinator")
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			j := testJob(t, 40, 2)
			if _, err := coord.Submit(ctx, j); err != nil {
				t.Fatal(err)
			}
			worker := connect(t, srv.URL(), "w")
			e := &hashEmbedder{delay: 100 * time.Millisecond}
			done := make(chan error, 1)
			go func() {
				_, err := worker.Work(ctx, WorkerConfig{Model: testModel, Embed: e, Idle: 8 * time.Second})
				done <- err
			}()
			time.Sleep(600 * time.Millisecond)
			if kill {
				srv.Kill()
			} else {
				srv.Stop()
			}
			e.mu.Lock()
			before := e.seen
			e.mu.Unlock()
			time.Sleep(time.Second)
			srv.Start(t)
			emb, dim, _, err := coord.Collect(ctx, j, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkCollected(t, j, emb, dim)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if before == 0 || before >= 40 {
				t.Errorf("the restart came after %d of 40 images: want it mid-run", before)
			}
		})
	}
}
