package serve

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/internal/testmodel"
)

// loadResult is one load run: images/s and latency percentiles.
type loadResult struct {
	clients, requests, errors int
	perSec                    float64
	p50, p99                  time.Duration
}

// load sends n POST /v1/embed requests (the bodies in turn) from clients concurrent clients,
// each waiting for its answer before the next, and measures the throughput and latencies.
func load(url string, bodies [][]byte, clients, n int) loadResult {
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: time.Minute}
	var next, errs atomic.Int64
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	t0 := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				s := time.Now()
				resp, err := hc.Post(url+"/v1/embed", "image/jpeg", bytes.NewReader(bodies[i%len(bodies)]))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != 200 {
					errs.Add(1)
				}
				lat[i] = time.Since(s)
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	slices.Sort(lat)
	return loadResult{clients: clients, requests: n, errors: int(errs.Load()), perSec: float64(n) / el.Seconds(),
		p50: lat[n/2], p99: lat[min(n-1, n*99/100)]}
}

// cubJPEGs returns the bytes of the first n images of the shared CUB-100 manifest.
func cubJPEGs(b testing.TB, n int) [][]byte {
	root := testenv.CUB100(b)
	f, err := os.Open(filepath.Join(root, "manifest.csv"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		b.Fatal(err)
	}
	var out [][]byte
	for _, r := range rows[1 : n+1] {
		img, err := os.ReadFile(filepath.Join(root, r[0]))
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, img)
	}
	return out
}

// BenchmarkServeLoad is the bounded load test of the README: real CUB JPEGs through /v1/embed of
// MobileNetV2 (+ a 128-d head) on loopback, at 1, 8 and 32 concurrent clients, one onnxruntime
// run per request against dynamic batching (max batch 32, max wait 2 ms), one server at a time. It stops by itself after a fixed number of requests
// per setting (PIPELINE_SERVE_LOAD_REQUESTS, default 16 per client, at least 32) and rounds
// (PIPELINE_SERVE_LOAD_ROUNDS, default 3; the speedups are the medians of the rounds). Run with
//
//	nice go test -run '^$' -bench ServeLoad -benchtime 1x ./serve/
func BenchmarkServeLoad(b *testing.B) {
	model := testmodel.MobileNet(b, 128)
	bodies := cubJPEGs(b, 64)
	perClient := 16
	if s := os.Getenv("PIPELINE_SERVE_LOAD_REQUESTS"); s != "" {
		fmt.Sscan(s, &perClient)
	}
	lib := testenv.ORTLibrary(b)
	// serveMode starts a server, warms it up and returns its URL and its stop function. Each
	// measurement has its server to itself: a stopped server's onnxruntime threads (which spin
	// for a while after a run) cannot take CPU from the next measurement.
	serveMode := func(batching bool) (string, func()) {
		s, err := New(Config{Model: model, ORTLibrary: lib, NoBatching: !batching,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx, ln) }()
		url := "http://" + ln.Addr().String()
		load(url, bodies, 4, 16) // warm up: onnxruntime's first runs allocate
		return url, func() { cancel(); <-done; s.Close() }
	}
	rounds := 3
	if s := os.Getenv("PIPELINE_SERVE_LOAD_ROUNDS"); s != "" {
		fmt.Sscan(s, &rounds)
	}
	clientCounts := []int{1, 8, 32}
	for i := 0; i < b.N; i++ {
		ld, _ := os.ReadFile("/proc/loadavg")
		b.Logf("CPU %s, GOMAXPROCS %d, load average before: %.14s", cpuModel(), runtime.GOMAXPROCS(0), ld)
		// The ceiling of what batching can gain: the model's images/s in bare onnxruntime at batch 32
		// over batch 1, no server involved.
		ceiling := bareBatchGain(b, model, lib)
		b.ReportMetric(ceiling, "ort_batch32/batch1")
		b.Logf("| round | clients | batching | images/s | p50 ms | p99 ms | errors |")
		b.Logf("|---|---|---|---|---|---|---|")
		// ratios[c] holds each round's batching / one-run-per-request images/s at clientCounts[c]:
		// the speed of this kind of virtual machine drifts by 20-30% within minutes, so the two
		// modes run back to back, in alternating order, and the median of the rounds is reported.
		ratios := make([][]float64, len(clientCounts))
		for round := range rounds {
			for ci, clients := range clientCounts {
				n := max(32, perClient*clients)
				var rate [2]float64
				first := (ci+round)%2 == 1
				for _, batching := range []bool{first, !first} {
					url, stop := serveMode(batching)
					r := load(url, bodies, clients, n)
					stop()
					mode := "off (one run per request)"
					if batching {
						mode = "on (max 32, 2 ms)"
						rate[1] = r.perSec
					} else {
						rate[0] = r.perSec
					}
					b.Logf("| %d | %d | %s | %.1f | %.1f | %.1f | %d |", round+1, clients, mode, r.perSec,
						float64(r.p50.Microseconds())/1000, float64(r.p99.Microseconds())/1000, r.errors)
					if r.errors > 0 {
						b.Errorf("%d clients, batching %v: %d requests failed", clients, batching, r.errors)
					}
				}
				ratios[ci] = append(ratios[ci], rate[1]/rate[0])
			}
		}
		for ci, clients := range clientCounts {
			rs := slices.Clone(ratios[ci])
			slices.Sort(rs)
			b.Logf("%d clients: batching / one run per request, per round %.3f, median %.3f", clients, ratios[ci], rs[len(rs)/2])
			b.ReportMetric(rs[len(rs)/2], fmt.Sprintf("speedup@%d", clients))
		}
		ld, _ = os.ReadFile("/proc/loadavg")
		b.Logf("load average after: %.14s", ld)
	}
}

// cpuModel is the "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range bytes.Split(b, []byte("\n")) {
		if k, v, ok := bytes.Cut(l, []byte(":")); ok && string(bytes.TrimSpace(k)) == "model name" {
			return string(bytes.TrimSpace(v))
		}
	}
	return "unknown"
}

// bareBatchGain returns the model's images/s in onnxruntime (2 threads, as the server's default
// on this machine kind) at batch 32 over that at batch 1, each run for about 3 seconds after a
// warm-up run, and logs both.
func bareBatchGain(b *testing.B, model, lib string) float64 {
	if err := ort.Init(lib); err != nil {
		b.Fatal(err)
	}
	raw, err := os.ReadFile(model)
	if err != nil {
		b.Fatal(err)
	}
	s, err := ort.NewSession(raw, ort.Options{Threads: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	per := int(s.InputShape()[0] * s.InputShape()[1] * s.InputShape()[2])
	rate := map[int]float64{}
	for _, bs := range []int{1, 32} {
		in, out := make([]float32, bs*per), make([]float32, bs*int(s.OutputShape()[0]))
		if err := s.Run(in, bs, out); err != nil {
			b.Fatal(err)
		}
		n, t0 := 0, time.Now()
		for time.Since(t0) < 3*time.Second {
			if err := s.Run(in, bs, out); err != nil {
				b.Fatal(err)
			}
			n += bs
		}
		rate[bs] = float64(n) / time.Since(t0).Seconds()
	}
	b.Logf("bare onnxruntime, 2 threads: %.1f images/s at batch 1, %.1f at batch 32 (x%.2f: what batching can gain at most)",
		rate[1], rate[32], rate[32]/rate[1])
	return rate[32] / rate[1]
}
