package serve

import (
	"context"
	"errors"
	"image"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grouploss/pipeline/internal/testenv"
)

// fakeModel embeds each 2-value image (a, b) as (a+b, a-b), recording the batch sizes; runs wait
// for a token on gate when gate is not nil.
type fakeModel struct {
	mu      sync.Mutex
	sizes   []int
	gate    chan struct{}
	fail    error
	entered atomic.Int32 // calls that reached the gate
}

func (m *fakeModel) Dim() int { return 2 }

func (m *fakeModel) EmbedTensors(in []float32, n int) ([]float32, error) {
	m.entered.Add(1)
	if m.gate != nil {
		<-m.gate
	}
	m.mu.Lock()
	m.sizes = append(m.sizes, n)
	m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	out := make([]float32, 2*n)
	for i := range n {
		out[2*i], out[2*i+1] = in[2*i]+in[2*i+1], in[2*i]-in[2*i+1]
	}
	return out, nil
}

// TestBatcherGathers: jobs queued while a run is in progress share the next run, up to maxBatch
// images (a job that does not fit waits for the next), each job gets its own rows back; with
// batching off every job is its own run.
func TestBatcherGathers(t *testing.T) {
	for _, batching := range []bool{true, false} {
		m := &fakeModel{gate: make(chan struct{})}
		b := newBatcher(m, 8, 2*time.Second, batching, 64, newMetrics())
		var wg sync.WaitGroup
		submit := func(i, n int) {
			defer wg.Done()
			in := make([]float32, 2*n)
			for k := range n {
				in[2*k], in[2*k+1] = float32(i), float32(k)
			}
			out, err := b.submit(context.Background(), in, n)
			if err != nil {
				t.Error(err)
				return
			}
			for k := range n {
				if out[2*k] != float32(i+k) || out[2*k+1] != float32(i-k) {
					t.Errorf("job %d row %d: %v", i, k, out[2*k:2*k+2])
				}
			}
		}
		wg.Add(1)
		go submit(100, 1)
		time.Sleep(20 * time.Millisecond)
		for i, n := range []int{3, 4, 2} {
			wg.Add(1)
			go submit(i, n)
			time.Sleep(20 * time.Millisecond)
		}
		// With batching, the first run gathered 1+3+4 = 8 images within its 2 s wait and the
		// job of 2 did not fit: it goes to the second run.
		close(m.gate)
		wg.Wait()
		b.close()
		total := 0
		for _, s := range m.sizes {
			total += s
			if s > 8 {
				t.Errorf("batching %v: a run of %d images, over the max of 8", batching, s)
			}
		}
		if total != 10 {
			t.Errorf("batching %v: runs %v, %d images, want 10", batching, m.sizes, total)
		}
		if batching && len(m.sizes) != 2 {
			t.Errorf("batching: runs %v, want 2 runs (8 and 2 images)", m.sizes)
		}
		if !batching && len(m.sizes) != 4 {
			t.Errorf("no batching: runs %v, want one per job", m.sizes)
		}
	}
}

// TestBatcherMaxWait: a lone job runs after maxWait, not later; errors reach every job of the run.
func TestBatcherMaxWait(t *testing.T) {
	m := &fakeModel{}
	b := newBatcher(m, 32, 20*time.Millisecond, true, 8, newMetrics())
	t0 := time.Now()
	if _, err := b.submit(context.Background(), []float32{1, 2}, 1); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 20*time.Millisecond || d > 10*time.Second {
		t.Errorf("a lone job took %v, want about the 20 ms max wait", d)
	}
	// Nobody else in flight: the job runs at once.
	b.mayJoin = func(int) bool { return false }
	b.maxWait = time.Hour
	t0 = time.Now()
	if _, err := b.submit(context.Background(), []float32{1, 2}, 1); err != nil || time.Since(t0) > 10*time.Second {
		t.Errorf("a lone job with nothing else in flight took %v (%v), want no wait", time.Since(t0), err)
	}
	m.fail = errors.New("boom")
	if _, err := b.submit(context.Background(), []float32{1, 2}, 1); err == nil || err.Error() != "boom" {
		t.Errorf("failing run: %v", err)
	}
	b.close()
}

// TestBatcherOverload: a full queue refuses at once with errOverloaded.
func TestBatcherOverload(t *testing.T) {
	m := &fakeModel{gate: make(chan struct{})}
	b := newBatcher(m, 1, 0, true, 2, newMetrics())
	ctx, cancel := context.WithCancel(context.Background())
	// Polled rather than slept for: on a loaded machine the goroutines may take long to get there.
	waitFor := func(what string, ok func() bool) {
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("after 10 s, %s: %d runs started, %d of %d queued", what, m.entered.Load(), len(b.queue), cap(b.queue))
			}
		}
	}
	// One job running (held at the gate) before the two that fill the queue are sent: sent
	// together, all three could reach the queue before the loop takes the first, and the third
	// would be refused.
	go b.submit(ctx, []float32{1, 2}, 1)
	waitFor("the first job running", func() bool { return m.entered.Load() == 1 })
	for range 2 {
		go b.submit(ctx, []float32{1, 2}, 1)
	}
	waitFor("two jobs queued", func() bool { return len(b.queue) == cap(b.queue) })
	if _, err := b.submit(ctx, []float32{1, 2}, 1); !errors.Is(err, errOverloaded) {
		t.Errorf("submit to a full queue: %v, want errOverloaded", err)
	}
	cancel()
	close(m.gate)
	b.close()
}

// TestHTTPBatching: concurrent /v1/embed requests share onnxruntime runs (the batch-size
// histogram records runs of more than one image) and each gets its own image's embedding.
func TestHTTPBatching(t *testing.T) {
	r := start(t, Config{MaxWait: 100 * time.Millisecond})
	const n = 12
	imgs := make([][]byte, n)
	want := make([][]float32, n)
	for i := range imgs {
		img := testImage(10+i, 9, i)
		imgs[i] = encodePNG(t, img)
		rows, err := r.emb.Embed([]image.Image{img})
		if err != nil {
			t.Fatal(err)
		}
		want[i] = rows[0]
	}
	// A burst batches only when its requests overlap in the server; on a loaded machine the client
	// goroutines may reach it one after another, each answered before the next arrives. So up to
	// five bursts are sent: one of them must batch, and every answer must be right.
	var runs, images int
	batched := false
	for burst := 1; burst <= 5 && !batched; burst++ {
		var wg sync.WaitGroup
		for i := range imgs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var got struct{ Embedding []float32 }
				code, _, b := call(t, "POST", r.url+"/v1/embed", "image/png", imgs[i])
				decode(t, b, &got)
				if code != 200 || testenv.MaxAbsDiff(got.Embedding, want[i]) > 1e-6 {
					t.Errorf("request %d: %d %s, want %v", i, code, b, want[i])
				}
			}()
		}
		wg.Wait()
		r.metrics.mu.Lock()
		h := r.metrics.batches
		runs, images, batched = int(h.n), int(h.sum), h.counts[0] != h.n
		r.metrics.mu.Unlock()
		if images != n*burst {
			t.Fatalf("%d images in the runs after %d bursts of %d", images, burst, n)
		}
		t.Logf("burst %d: %d runs so far for %d images", burst, runs, images)
	}
	if !batched {
		t.Errorf("%d runs for %d images in 5 bursts of %d concurrent requests, every run of 1 image: no batching", runs, images, n)
	}
}
