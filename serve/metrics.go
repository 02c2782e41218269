package serve

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// metrics are the server's Prometheus metrics, written in the text exposition format by hand:
// four families need no client library (github.com/prometheus/client_golang would bring six
// modules and a newer google.golang.org/protobuf than go.mod's).
type metrics struct {
	mu       sync.Mutex
	requests map[[2]string]uint64 // {route, code} -> count
	errors   map[[2]string]uint64 // {route, code} -> count of 4xx and 5xx answers
	latency  map[string]*histogram
	batches  *histogram // images per model run
	runTime  *histogram // seconds per model run
	inflight atomic.Int64
	queued   atomic.Int64
}

// latencyBuckets (seconds) and batchBuckets (images) are the histograms' upper bounds.
var (
	latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	batchBuckets   = []float64{1, 2, 4, 8, 16, 32, 64, 128}
)

func newMetrics() *metrics {
	return &metrics{requests: map[[2]string]uint64{}, errors: map[[2]string]uint64{}, latency: map[string]*histogram{},
		batches: newHistogram(batchBuckets), runTime: newHistogram(latencyBuckets)}
}

// observeRequest counts one answered request.
func (m *metrics) observeRequest(route string, code int, d time.Duration) {
	k := [2]string{route, strconv.Itoa(code)}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[k]++
	if code >= 400 {
		m.errors[k]++
	}
	h := m.latency[route]
	if h == nil {
		h = newHistogram(latencyBuckets)
		m.latency[route] = h
	}
	h.observe(d.Seconds())
}

// observeBatch counts one model run of n images.
func (m *metrics) observeBatch(n int, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batches.observe(float64(n))
	m.runTime.observe(d.Seconds())
}

// histogram is a cumulative Prometheus histogram.
type histogram struct {
	bounds []float64
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
	n      uint64
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	h.counts[sort.SearchFloat64s(h.bounds, v)]++
	h.sum += v
	h.n++
}

func (h *histogram) write(w io.Writer, name, labels string) {
	var cum uint64
	sep := ""
	if labels != "" {
		sep = ","
	}
	for i, b := range h.bounds {
		cum += h.counts[i]
		fmt.Fprintf(w, "%s_bucket{%s%sle=%q} %d\n", name, labels, sep, fmtFloat(b), cum)
	}
	fmt.Fprintf(w, "%s_bucket{%s%sle=\"+Inf\"} %d\n", name, labels, sep, h.n)
	if labels != "" {
		labels = "{" + labels + "}"
	}
	fmt.Fprintf(w, "%s_sum%s %s\n%s_count%s %d\n", name, labels, fmtFloat(h.sum), name, labels, h.n)
}

func fmtFloat(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// ServeHTTP writes the metrics in the Prometheus text format (version 0.0.4).
func (m *metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m.mu.Lock()
	defer m.mu.Unlock()
	counter := func(name, help string, c map[[2]string]uint64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", name, help, name)
		for _, k := range sortedKeys(c) {
			fmt.Fprintf(w, "%s{route=%q,code=%q} %d\n", name, k[0], k[1], c[k])
		}
	}
	counter("pipeline_serve_requests_total", "HTTP requests answered, by route and status code.", m.requests)
	counter("pipeline_serve_errors_total", "HTTP requests answered with a 4xx or 5xx status, by route and status code.", m.errors)
	fmt.Fprint(w, "# HELP pipeline_serve_request_duration_seconds Time from the request to the end of its answer, by route.\n"+
		"# TYPE pipeline_serve_request_duration_seconds histogram\n")
	routes := make([]string, 0, len(m.latency))
	for r := range m.latency {
		routes = append(routes, r)
	}
	sort.Strings(routes)
	for _, r := range routes {
		m.latency[r].write(w, "pipeline_serve_request_duration_seconds", fmt.Sprintf("route=%q", r))
	}
	fmt.Fprint(w, "# HELP pipeline_serve_batch_size Images per onnxruntime run.\n# TYPE pipeline_serve_batch_size histogram\n")
	m.batches.write(w, "pipeline_serve_batch_size", "")
	fmt.Fprint(w, "# HELP pipeline_serve_run_duration_seconds Time of one onnxruntime run.\n# TYPE pipeline_serve_run_duration_seconds histogram\n")
	m.runTime.write(w, "pipeline_serve_run_duration_seconds", "")
	fmt.Fprintf(w, "# HELP pipeline_serve_inflight_requests Requests admitted and not yet answered.\n"+
		"# TYPE pipeline_serve_inflight_requests gauge\npipeline_serve_inflight_requests %d\n", m.inflight.Load())
	fmt.Fprintf(w, "# HELP pipeline_serve_queued_requests Requests waiting for a model run.\n"+
		"# TYPE pipeline_serve_queued_requests gauge\npipeline_serve_queued_requests %d\n", m.queued.Load())
}

func sortedKeys(c map[[2]string]uint64) [][2]string {
	keys := make([][2]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	return keys
}
