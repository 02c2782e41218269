package serve

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDrain: cancelling Serve's context stops new connections, lets the request in flight finish
// with its answer, and Serve returns nil.
func TestDrain(t *testing.T) {
	r := start(t, Config{})
	img := encodePNG(t, testImage(9, 7, 3))
	c, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Headers and half the body, then shutdown begins.
	fmt.Fprintf(c, "POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n", len(img))
	c.Write(img[:len(img)/2])
	time.Sleep(100 * time.Millisecond)
	r.stop()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-r.done:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	default:
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(r.url, "http://"), time.Second); err == nil {
		t.Error("a new connection was accepted while draining")
	}
	c.Write(img[len(img)/2:])
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("the request in flight got %d, want 200", resp.StatusCode)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		r.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the last request")
	}
	if !strings.Contains(r.logs.String(), `"msg":"serve: drained"`) {
		t.Errorf("logs:\n%s", r.logs)
	}
}

// TestMetricsAndLogs: /metrics counts requests, errors, latencies and batch sizes in the
// Prometheus text format; every request is one JSON log line.
func TestMetricsAndLogs(t *testing.T) {
	r := start(t, Config{Name: "tiny"})
	img := encodePNG(t, testImage(9, 7, 3))
	for range 3 {
		call(t, "POST", r.url+"/v1/embed", "image/png", img)
	}
	call(t, "POST", r.url+"/v1/embed", "image/png", []byte("junk"))
	call(t, "GET", r.url+"/v2/models/tiny", "", nil)
	code, h, b := call(t, "GET", r.url+"/metrics", "", nil)
	text := string(b)
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("/metrics: %d %s", code, h.Get("Content-Type"))
	}
	for _, want := range []string{
		`pipeline_serve_requests_total{route="/v1/embed",code="200"} 3`,
		`pipeline_serve_requests_total{route="/v1/embed",code="400"} 1`,
		`pipeline_serve_requests_total{route="/v2/models/{name}",code="200"} 1`,
		`pipeline_serve_errors_total{route="/v1/embed",code="400"} 1`,
		`pipeline_serve_request_duration_seconds_count{route="/v1/embed"} 4`,
		`pipeline_serve_request_duration_seconds_bucket{route="/v1/embed",le="+Inf"} 4`,
		`pipeline_serve_batch_size_count 3`,
		`pipeline_serve_batch_size_bucket{le="1"} 3`,
		`pipeline_serve_batch_size_sum 3`,
		"# TYPE pipeline_serve_batch_size histogram",
		"pipeline_serve_inflight_requests 0",
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", want, text)
		}
	}
	// Every line is a comment or `name{labels} value`, and buckets are cumulative.
	line := regexp.MustCompile(`^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+$`)
	last := map[string]float64{}
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		if strings.HasPrefix(l, "# HELP ") || strings.HasPrefix(l, "# TYPE ") {
			continue
		}
		if !line.MatchString(l) {
			t.Errorf("not a Prometheus sample line: %q", l)
			continue
		}
		if strings.Contains(l, "_bucket{") {
			series := l[:strings.Index(l, "le=")]
			v, _ := strconv.ParseFloat(l[strings.LastIndex(l, " ")+1:], 64)
			if v < last[series] {
				t.Errorf("bucket %q below the previous one (%v)", l, last[series])
			}
			last[series] = v
		}
	}
	logs := r.logs.String()
	if n := strings.Count(logs, `"msg":"request","method":"POST","path":"/v1/embed","status":200`); n != 3 {
		t.Errorf("%d request log lines for the 3 embeds:\n%s", n, logs)
	}
	if !strings.Contains(logs, `"status":400`) || !strings.Contains(logs, `"error":"data: image \"request body\": image: unknown format: send a JPEG or PNG image"`) {
		t.Errorf("no log line of the bad request:\n%s", logs)
	}
}
