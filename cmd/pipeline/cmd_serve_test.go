package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/internal/testmodel"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/npy"
)

var listeningRE = regexp.MustCompile(`"msg":"serve: listening","addr":"([0-9.:]+)"`)

// waitListening returns the address the server logged, failing after 60 s.
func waitListening(t *testing.T, logs interface{ String() string }) string {
	t.Helper()
	for range 600 {
		if m := listeningRE.FindStringSubmatch(logs.String()); m != nil {
			return "http://" + m[1]
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the server did not log its address:\n%s", logs.String())
	return ""
}

func postJSON(t *testing.T, url, ctype string, body []byte, v any) int {
	t.Helper()
	resp, err := http.Post(url, ctype, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %d %.300q: %v", url, resp.StatusCode, b, err)
	}
	return resp.StatusCode
}

// TestServeEndToEnd: `pipeline serve` of a MobileNetV2 embedding model on a loopback port
// answers, for real CUB images, the embeddings `pipeline embed` writes (max |diff| <= 1e-5)
// through /v1/embed (raw and multipart) and /v2/models/NAME/infer (the tensors preprocessed as
// the model's metadata says), and /v1/search of the gallery `pipeline index` built finds each
// image first.
func TestServeEndToEnd(t *testing.T) {
	needORT(t)
	manifest := testenv.SmallCUB(t, 2, 3) // 6 real CUB-100 JPEGs
	model := testmodel.MobileNet(t, 64)
	dir := t.TempDir()
	npyPath, gallery := filepath.Join(dir, "emb.npy"), filepath.Join(dir, "gallery.idx")
	if r := toolRun("embed", "--model", model, "--data", manifest, "--out", npyPath); r.code != 0 {
		t.Fatalf("embed: %d %s", r.code, r.stderr)
	}
	if r := toolRun("index", "--model", model, "--data", manifest, "--out", gallery); r.code != 0 {
		t.Fatalf("index: %d %s", r.code, r.stderr)
	}
	want, n, d, err := npy.Read(npyPath)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(manifest)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil || len(rows)-1 != n {
		t.Fatalf("%d manifest rows for %d embeddings (%v)", len(rows)-1, n, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	logs := &testenv.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- cmdServe(ctx, []string{"--model", model, "--index", gallery, "--addr", "127.0.0.1:0", "--name", "cub"}, io.Discard, logs)
	}()
	url := waitListening(t, logs)

	var meta struct {
		Parameters struct{ Preprocess map[string]string }
	}
	resp, err := http.Get(url + "/v2/models/cub")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	pre, err := data.PreprocessFromMetadata(meta.Parameters.Preprocess)
	if err != nil {
		t.Fatalf("the model metadata's preprocessing: %v", err)
	}
	tensors := make([]float32, n*pre.Size())
	worst := map[string]float64{}
	for i, row := range rows[1:] {
		img, err := os.ReadFile(row[0])
		if err != nil {
			t.Fatal(err)
		}
		wantRow := want[i*d : (i+1)*d]
		var emb struct{ Embedding []float32 }
		if code := postJSON(t, url+"/v1/embed", "image/jpeg", img, &emb); code != 200 {
			t.Fatalf("/v1/embed %s: %d", row[0], code)
		}
		worst["/v1/embed"] = math.Max(worst["/v1/embed"], testenv.MaxAbsDiff(emb.Embedding, wantRow))
		var mp bytes.Buffer
		mw := multipart.NewWriter(&mp)
		fw, _ := mw.CreateFormFile("image", filepath.Base(row[0]))
		fw.Write(img)
		mw.Close()
		if code := postJSON(t, url+"/v1/embed", mw.FormDataContentType(), mp.Bytes(), &emb); code != 200 {
			t.Fatalf("/v1/embed multipart %s: %d", row[0], code)
		}
		worst["/v1/embed multipart"] = math.Max(worst["/v1/embed multipart"], testenv.MaxAbsDiff(emb.Embedding, wantRow))
		var res struct {
			Neighbors []struct {
				Path, Label string
				Distance    float64
			}
		}
		if code := postJSON(t, url+"/v1/search?k=3", "image/jpeg", img, &res); code != 200 || len(res.Neighbors) != 3 {
			t.Fatalf("/v1/search %s: %d %+v", row[0], code, res)
		}
		if nb := res.Neighbors[0]; !strings.HasSuffix(nb.Path, filepath.ToSlash(filepath.Base(row[0]))) || nb.Distance > 1e-5 {
			t.Errorf("/v1/search %s: nearest %+v, want the image itself", row[0], nb)
		}
		if err := pre.TensorFile(row[0], tensors[i*pre.Size():(i+1)*pre.Size()]); err != nil {
			t.Fatal(err)
		}
	}
	body, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": "images", "datatype": "FP32",
		"shape": []int{n, 3, pre.Height, pre.Width}, "data": tensors}}})
	var inf struct {
		Outputs []struct {
			Name  string
			Shape []int
			Data  []float32
		}
	}
	if code := postJSON(t, url+"/v2/models/cub/infer", "application/json", body, &inf); code != 200 || len(inf.Outputs) != 1 ||
		fmt.Sprint(inf.Outputs[0].Shape) != fmt.Sprint([]int{n, d}) {
		t.Fatalf("/v2 infer: %d %+v", code, inf.Outputs)
	}
	worst["/v2/models/cub/infer"] = testenv.MaxAbsDiff(inf.Outputs[0].Data, want)
	for route, w := range worst {
		t.Logf("%s: max |diff| %.3g against `pipeline embed` over %d CUB images", route, w, n)
		if w > 1e-5 {
			t.Errorf("%s: embeddings differ from `pipeline embed` by %.3g (> 1e-5)", route, w)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// TestServeHelperProcess is the `pipeline` process of TestServeSIGTERM.
func TestServeHelperProcess(t *testing.T) {
	if os.Getenv("PIPELINE_SERVE_HELPER") == "" {
		t.Skip("the child process of TestServeSIGTERM")
	}
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv("PIPELINE_SERVE_HELPER")), &args); err != nil {
		t.Fatal(err)
	}
	os.Exit(run(args, os.Stdout, os.Stderr))
}

// TestServeSIGTERM: SIGTERM to `pipeline serve` lets the request in flight finish with its
// answer, and the process exits 0.
func TestServeSIGTERM(t *testing.T) {
	needORT(t)
	model := toolModel(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeHelperProcess$")
	args, _ := json.Marshal([]string{"serve", "--model", model, "--addr", "127.0.0.1:0"})
	cmd.Env = append(os.Environ(), "PIPELINE_SERVE_HELPER="+string(args))
	logs := &testenv.SyncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	url := waitListening(t, logs)
	img, err := os.ReadFile(filepath.Join(toolDataset(t, 1), "class0", "00.png"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n", len(img))
	c.Write(img[:10])
	time.Sleep(200 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	c.Write(img[10:])
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the request in flight: %v\n%s", err, logs)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("the request in flight got %d, want 200", resp.StatusCode)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("pipeline serve after SIGTERM: %v, want exit 0\n%s", err, logs)
	}
	if !strings.Contains(logs.String(), `"msg":"serve: drained"`) {
		t.Errorf("no drain in the logs:\n%s", logs)
	}
}

// TestExportTriton: `pipeline export --model M --triton DIR` writes the repository entry and
// says where; bad usage exits 2.
func TestExportTriton(t *testing.T) {
	model := toolModel(t)
	dir := t.TempDir()
	r := toolRun("export", "--model", model, "--triton", dir, "--name", "birds", "--max-batch", "8")
	if r.code != 0 || !strings.Contains(r.stdout, filepath.Join(dir, "birds", "config.pbtxt")) {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "birds", "config.pbtxt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"name: \"birds\"\n", "platform: \"onnxruntime_onnx\"\n", "max_batch_size: 8\n", "dims: [ 3, 6, 6 ]"} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("config.pbtxt lacks %q:\n%s", want, cfg)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "birds", "1", "model.onnx")); err != nil {
		t.Error(err)
	}
	for _, args := range [][]string{{"export", "--triton", dir}, {"export", "--model", model, "--triton", dir, "--max-batch", "0"}} {
		if r := toolRun(args...); r.code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, r.code, r.stderr)
		}
	}
}
