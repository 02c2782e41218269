package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/internal/testmodel"
)

// running is a Server answering on a loopback port.
type running struct {
	*Server
	url  string
	stop context.CancelFunc
	done chan error // Serve's result
	logs *testenv.SyncBuffer
}

// start serves cfg (Model defaults to the tiny test model) on 127.0.0.1:0 until the test ends.
func start(t *testing.T, cfg Config) *running {
	t.Helper()
	if cfg.Model == "" {
		cfg.Model = testmodel.Tiny(t)
	}
	cfg.ORTLibrary = testenv.ORTLibrary(t)
	logs := &testenv.SyncBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Server: s, url: "http://" + ln.Addr().String(), stop: cancel, done: make(chan error, 1), logs: logs}
	go func() { r.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Serve did not return 20 s after its context was cancelled")
		}
		s.Close()
	})
	return r
}

// call sends a request and returns the status, the headers and the body.
func call(t *testing.T, method, url, contentType string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// decode unmarshals a JSON answer.
func decode(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("answer %.300q: %v", b, err)
	}
}

// testImage is a w x h image with a pattern depending on seed.
func testImage(w, h, seed int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x*255/w + seed*37), uint8(y*255/h) ^ uint8(seed*11), uint8((x + y + seed) * 5), 255})
		}
	}
	return img
}

func encodePNG(t *testing.T, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t *testing.T, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
