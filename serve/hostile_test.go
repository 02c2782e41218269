package serve

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// pngHeaderBomb is a PNG whose header claims width x height pixels, with a tiny (invalid) image
// stream: a decoder that trusted the header would allocate width*height*4 bytes.
func pngHeaderBomb(width, height uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		c := crc32.NewIEEE()
		c.Write([]byte(typ))
		c.Write(data)
		b.WriteString(typ)
		b.Write(data)
		binary.Write(&b, binary.BigEndian, c.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, width)
	binary.BigEndian.PutUint32(ihdr[4:], height)
	ihdr[8], ihdr[9] = 8, 0 // 8-bit grayscale
	chunk("IHDR", ihdr)
	chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk("IEND", nil)
	return b.Bytes()
}

// TestHostileRequests: every bad request is a 4xx JSON error naming the problem, and the server
// keeps answering.
func TestHostileRequests(t *testing.T) {
	r := start(t, Config{Name: "tiny", MaxBodyBytes: 1 << 20, MaxPixels: 1_000_000, MaxBatch: 4})
	// A real decompression bomb: 2000x2000 black pixels (4 MP, over the 1 MP cap) in ~4 KiB.
	var bomb bytes.Buffer
	png.Encode(&bomb, image.NewGray(image.Rect(0, 0, 2000, 2000)))
	if bomb.Len() > 64<<10 {
		t.Fatalf("bomb is %d bytes", bomb.Len())
	}
	good := encodePNG(t, testImage(8, 8, 1))
	img := func(n int) string {
		return fmt.Sprintf(`{"inputs":[{"name":"images","shape":[%d,3,6,6],"datatype":"FP32","data":[%s0]}]}`, n, strings.Repeat("0.5,", n*108-1))
	}
	cases := []struct {
		name, method, path, ctype string
		body                      []byte
		status                    int
		want                      string // in the error message
	}{
		{"oversized body", "POST", "/v1/embed", "image/png", make([]byte, 2<<20), 413, "over the cap of 1048576 bytes"},
		{"oversized infer body", "POST", "/v2/models/tiny/infer", "application/json", append([]byte(`{"inputs":[`), make([]byte, 2<<20)...), 413, "over the cap"},
		{"decompression bomb", "POST", "/v1/embed", "image/png", bomb.Bytes(), 413, "4.0 megapixels, over the cap of 1.0"},
		{"header bomb", "POST", "/v1/embed", "image/png", pngHeaderBomb(100000, 100000), 413, "10000.0 megapixels"},
		{"broken image", "POST", "/v1/embed", "image/jpeg", encodeJPEG(t, testImage(20, 20, 2))[:300], 400, "send a JPEG or PNG"},
		{"not an image", "POST", "/v1/embed", "text/plain", []byte("hello"), 400, "image: unknown format"},
		{"empty body", "POST", "/v1/embed", "", nil, 400, "empty request body"},
		{"multipart without file", "POST", "/v1/embed", "multipart/form-data; boundary=xx", []byte("--xx\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--xx--\r\n"), 400, "no file part"},
		{"multipart without boundary", "POST", "/v1/embed", "multipart/form-data", good, 400, "boundary"},
		{"search without index", "POST", "/v1/search", "image/png", good, 404, "--index"},
		{"wrong model", "POST", "/v2/models/other/infer", "application/json", []byte(img(1)), 404, `unknown model "other"`},
		{"wrong version", "GET", "/v2/models/tiny/versions/7", "", nil, 404, `no version "7"`},
		{"not JSON", "POST", "/v2/models/tiny/infer", "application/json", []byte("{"), 400, "not the JSON"},
		{"no inputs", "POST", "/v2/models/tiny/infer", "application/json", []byte(`{"inputs":[]}`), 400, "0 tensors"},
		{"wrong input name", "POST", "/v2/models/tiny/infer", "", []byte(strings.Replace(img(1), `"images"`, `"x"`, 1)), 400, `name "x"`},
		{"wrong datatype", "POST", "/v2/models/tiny/infer", "", []byte(strings.Replace(img(1), "FP32", "INT64", 1)), 400, `datatype "INT64"`},
		{"wrong shape", "POST", "/v2/models/tiny/infer", "", []byte(strings.Replace(img(1), "[1,3,6,6]", "[1,3,6,7]", 1)), 400, "shape [1 3 6 7], want [-1 3 6 6]"},
		{"NHWC shape", "POST", "/v2/models/tiny/infer", "", []byte(strings.Replace(img(1), "[1,3,6,6]", "[1,6,6,3]", 1)), 400, "NCHW"},
		{"batch over max", "POST", "/v2/models/tiny/infer", "", []byte(img(5)), 400, "batch 5, want 1 to 4"},
		{"too few values", "POST", "/v2/models/tiny/infer", "", []byte(strings.Replace(img(1), "0.5,0]", "0]", 1)), 400, "107 values, the shape holds 108"},
		{"too many values", "POST", "/v2/models/tiny/infer", "", []byte(strings.Replace(img(1), "0.5,0]", "0.5,0.5,0]", 1)), 400, "109 values"},
		{"string values", "POST", "/v2/models/tiny/infer", "", []byte(strings.Replace(img(1), "0.5,0]", `0.5,"x"]`, 1)), 400, "is string, want a number"},
		{"unknown output", "POST", "/v2/models/tiny/infer", "", []byte(strings.Replace(img(1), `}]}`, `}],"outputs":[{"name":"logits"}]}`, 1)), 400, `unknown output "logits"`},
		{"bad binary length", "POST", "/v2/models/tiny/infer", "", []byte(`{"inputs":[{"name":"images","shape":[1,3,6,6],"datatype":"FP32","parameters":{"binary_data_size":8}}]}`), 400, "binary_data_size"},
		{"bad k", "POST", "/v1/search?k=0", "image/png", good, 404, "--index"},
		{"unknown route", "GET", "/v3/foo", "", nil, 404, "no route GET /v3/foo"},
		{"wrong method", "GET", "/v1/embed", "", nil, 404, "no route GET /v1/embed"},
	}
	for _, c := range cases {
		code, h, b := call(t, c.method, r.url+c.path, c.ctype, c.body)
		var e struct{ Error string }
		decode(t, b, &e)
		if code != c.status || !strings.Contains(e.Error, c.want) || h.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %q, want %d and an error containing %q", c.name, code, e.Error, c.status, c.want)
		}
	}
	// A NaN in binary data.
	head := `{"inputs":[{"name":"images","shape":[1,3,6,6],"datatype":"FP32","parameters":{"binary_data_size":432}}]}`
	vals := make([]float32, 108)
	vals[7] = float32(nan())
	req, _ := http.NewRequest("POST", r.url+"/v2/models/tiny/infer", bytes.NewReader(append([]byte(head), le(vals)...)))
	req.Header.Set(binaryHeader, fmt.Sprint(len(head)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "value 7 is NaN") {
		t.Errorf("NaN input: %d %s", resp.StatusCode, b)
	}
	// Still serving.
	if code, _, b := call(t, "POST", r.url+"/v1/embed", "image/png", good); code != 200 {
		t.Errorf("after the hostile requests: %d %s", code, b)
	}
	if code, _, b := call(t, "POST", r.url+"/v2/models/tiny/infer", "", []byte(img(4))); code != 200 {
		t.Errorf("after the hostile requests: %d %s", code, b)
	}
}

func nan() float64 { var z float64; return z / z }

// TestSlowClients: clients that hold connections without finishing their request are cut after
// the header and read timeouts; while they hold every admission slot, requests get 503 with
// Retry-After rather than waiting, and health checks are still answered.
func TestSlowClients(t *testing.T) {
	// The read timeout bounds how long the slow bodies hold their slots: long enough that a loaded
	// machine (or the race detector) gets to all of them before the first is cut, short enough to
	// keep the test brief.
	const readTimeout = 8 * time.Second
	r := start(t, Config{ReadHeaderTimeout: 2 * time.Second, ReadTimeout: readTimeout, QueueSize: 4})
	addr := strings.TrimPrefix(r.url, "http://")
	// 20 clients that never finish their headers and 6 that never finish their body (more than
	// the 4 admitted requests).
	var conns []net.Conn
	for i := range 26 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if i < 20 {
			fmt.Fprintf(c, "POST /v1/embed HTTP/1.1\r\nHost: x\r\n")
		} else {
			fmt.Fprintf(c, "POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n\x89PNG")
		}
		conns = append(conns, c)
	}
	// Wait until the server has read the slow bodies' headers and admitted four of them (its
	// in-flight gauge), rather than guessing how long that takes on a loaded machine.
	for deadline := time.Now().Add(readTimeout / 2); r.metrics.inflight.Load() < 4; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of the slow bodies admitted after %v", r.metrics.inflight.Load(), readTimeout/2)
		}
	}
	// With every slot held, a model request is refused at once.
	good := encodePNG(t, testImage(8, 8, 1))
	code, h, b := call(t, "POST", r.url+"/v1/embed", "image/png", good)
	if code != 503 || h.Get("Retry-After") == "" || !strings.Contains(string(b), "overloaded") {
		t.Errorf("with 4 slow bodies admitted: %d %s (Retry-After %q), want 503 with Retry-After", code, b, h.Get("Retry-After"))
	}
	if code, _, b := call(t, "GET", r.url+"/v2/health/ready", "", nil); code != 200 {
		t.Errorf("health while slow clients hold connections: %d %s", code, b)
	}
	// Every slow connection is closed by the server within the timeouts.
	deadline := time.Now().Add(readTimeout + 10*time.Second)
	for i, c := range conns {
		c.SetReadDeadline(deadline)
		resp, err := io.ReadAll(bufio.NewReader(c))
		if time.Now().After(deadline) {
			t.Fatalf("slow connection %d still open after %v (read %q, %v)", i, readTimeout+10*time.Second, resp, err)
		}
	}
	if code, _, b := call(t, "POST", r.url+"/v1/embed", "image/png", good); code != 200 {
		t.Errorf("after the slow clients were cut: %d %s", code, b)
	}
}
