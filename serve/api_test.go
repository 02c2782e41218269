package serve

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image"
	"math"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/internal/testenv"
	"github.com/grouploss/pipeline/pipeline/gallery"
)

// TestV2Protocol: health, metadata, and infer with JSON data (flat and nested) and binary data
// answer the Embedder's embeddings of the same tensors.
func TestV2Protocol(t *testing.T) {
	r := start(t, Config{Name: "tiny"})
	for _, path := range []string{"/v2/health/live", "/v2/health/ready", "/v2/models/tiny/ready", "/v2"} {
		if code, _, b := call(t, "GET", r.url+path, "", nil); code != 200 {
			t.Errorf("GET %s: %d %s", path, code, b)
		}
	}
	code, _, b := call(t, "GET", r.url+"/v2/models/tiny", "", nil)
	var meta struct {
		Name     string
		Platform string
		Inputs   []tensorMetadata
		Outputs  []tensorMetadata
	}
	decode(t, b, &meta)
	if code != 200 || meta.Name != "tiny" || len(meta.Inputs) != 1 || len(meta.Outputs) != 1 ||
		fmt.Sprint(meta.Inputs[0]) != "{images FP32 [-1 3 6 6]}" || fmt.Sprint(meta.Outputs[0]) != "{embeddings FP32 [-1 3]}" {
		t.Fatalf("metadata %d %s", code, b)
	}

	pre := r.emb.Preprocess()
	in := make([]float32, 3*pre.Size())
	var imgs []image.Image
	for i := range 3 {
		imgs = append(imgs, testImage(20+i, 17, i))
		if err := pre.Tensor(imgs[i], in[i*pre.Size():(i+1)*pre.Size()]); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := r.emb.Embed(imgs)
	if err != nil {
		t.Fatal(err)
	}
	var want []float32
	for _, row := range rows {
		want = append(want, row...)
	}
	// Flat JSON data.
	req := fmt.Sprintf(`{"id":"a1","inputs":[{"name":"images","shape":[3,3,6,6],"datatype":"FP32","data":%s}]}`, floats(in))
	code, _, b = call(t, "POST", r.url+"/v2/models/tiny/infer", "application/json", []byte(req))
	var resp struct {
		ID        string `json:"id"`
		ModelName string `json:"model_name"`
		Outputs   []inferOutput
	}
	decode(t, b, &resp)
	if code != 200 || resp.ID != "a1" || resp.ModelName != "tiny" || len(resp.Outputs) != 1 || resp.Outputs[0].Name != "embeddings" ||
		fmt.Sprint(resp.Outputs[0].Shape) != "[3 3]" || resp.Outputs[0].Datatype != "FP32" {
		t.Fatalf("infer: %d %s", code, b)
	}
	if d := testenv.MaxAbsDiff(resp.Outputs[0].Data, want); d > 1e-6 {
		t.Errorf("infer (flat JSON) differs from Embed by %.3g", d)
	}
	// Nested JSON data, one image, through the versioned route.
	nested, _ := json.Marshal(nest(in[:pre.Size()], 3, 6, 6))
	req = fmt.Sprintf(`{"inputs":[{"name":"images","shape":[1,3,6,6],"datatype":"FP32","data":[%s]}]}`, nested)
	code, _, b = call(t, "POST", r.url+"/v2/models/tiny/versions/1/infer", "application/json", []byte(req))
	decode(t, b, &resp)
	if code != 200 || testenv.MaxAbsDiff(resp.Outputs[0].Data, want[:3]) > 1e-6 {
		t.Errorf("infer (nested JSON): %d %s, want %v", code, b, want[:3])
	}
	// Binary tensor data in, binary out (what Triton's clients send by default).
	head := `{"inputs":[{"name":"images","shape":[3,3,6,6],"datatype":"FP32","parameters":{"binary_data_size":` +
		strconv.Itoa(4*len(in)) + `}}],"outputs":[{"name":"embeddings","parameters":{"binary_data":true}}]}`
	body := append([]byte(head), le(in)...)
	hreq, _ := http.NewRequest("POST", r.url+"/v2/models/tiny/infer", bytes.NewReader(body))
	hreq.Header.Set(binaryHeader, strconv.Itoa(len(head)))
	hresp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	var rb bytes.Buffer
	rb.ReadFrom(hresp.Body)
	hresp.Body.Close()
	hl, _ := strconv.Atoi(hresp.Header.Get(binaryHeader))
	if hresp.StatusCode != 200 || hl <= 0 || rb.Len() != hl+4*9 {
		t.Fatalf("binary infer: %d, header %d, %d bytes: %q", hresp.StatusCode, hl, rb.Len(), rb.Bytes())
	}
	got := make([]float32, 9)
	for i := range got {
		got[i] = math.Float32frombits(binary.LittleEndian.Uint32(rb.Bytes()[hl+4*i:]))
	}
	if d := testenv.MaxAbsDiff(got, want); d != 0 || !strings.Contains(rb.String()[:hl], `"binary_data_size":36`) {
		t.Errorf("binary infer: %v (diff %.3g), header %s", got, d, rb.String()[:hl])
	}
}

// floats is the JSON array of v.
func floats(v []float32) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// nest reshapes a flat c x h x w slice into nested arrays.
func nest(v []float32, c, h, w int) [][][]float32 {
	out := make([][][]float32, c)
	for i := range out {
		out[i] = make([][]float32, h)
		for j := range out[i] {
			out[i][j] = v[(i*h+j)*w : (i*h+j+1)*w]
		}
	}
	return out
}

// le is v as little-endian float32 bytes.
func le(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// TestEmbedAndSearch: /v1/embed answers EmbedFiles' embedding of the same file, raw or multipart,
// PNG or JPEG; /v1/search finds an indexed image at distance 0 first.
func TestEmbedAndSearch(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	var files [][]byte
	for i := range 6 {
		var b []byte
		name := fmt.Sprintf("img%d.png", i)
		if i%2 == 0 {
			b = encodePNG(t, testImage(30+i, 20+2*i, i))
		} else {
			b, name = encodeJPEG(t, testImage(40, 30+i, i)), fmt.Sprintf("img%d.jpg", i)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths, files = append(paths, p), append(files, b)
	}
	r0 := start(t, Config{})
	want, err := r0.emb.EmbedFiles(paths)
	if err != nil {
		t.Fatal(err)
	}
	var flat []float32
	for _, w := range want {
		flat = append(flat, w...)
	}
	labels := []string{"a", "b", "c", "d", "e", "f"}
	model, err := gallery.IdentifyModel(r0.cfg.Model)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := gallery.New(flat, 3, paths, labels, model)
	if err != nil {
		t.Fatal(err)
	}
	ipath := filepath.Join(dir, "gallery.idx")
	if err := gallery.Write(ipath, idx); err != nil {
		t.Fatal(err)
	}
	r := start(t, Config{Model: r0.cfg.Model, Index: ipath})

	for _, k := range []string{"0", "1001", "x"} {
		code, _, body := call(t, "POST", r.url+"/v1/search?k="+k, "", files[0])
		if code != 400 || !strings.Contains(string(body), "query parameter k=") {
			t.Errorf("k=%s: %d %s, want 400 naming k", k, code, body)
		}
	}
	for i, b := range files {
		var got struct {
			Dim       int
			Embedding []float32
		}
		code, _, body := call(t, "POST", r.url+"/v1/embed", "image/png", b)
		decode(t, body, &got)
		if code != 200 || got.Dim != 3 || testenv.MaxAbsDiff(got.Embedding, want[i]) > 1e-6 {
			t.Errorf("embed %s: %d %s, want %v", paths[i], code, body, want[i])
		}
		var mp bytes.Buffer
		mw := multipart.NewWriter(&mp)
		mw.WriteField("note", "ignored")
		fw, _ := mw.CreateFormFile("image", filepath.Base(paths[i]))
		fw.Write(b)
		mw.Close()
		code, _, body = call(t, "POST", r.url+"/v1/embed", mw.FormDataContentType(), mp.Bytes())
		decode(t, body, &got)
		if code != 200 || testenv.MaxAbsDiff(got.Embedding, want[i]) > 1e-6 {
			t.Errorf("embed multipart %s: %d %s, want %v", paths[i], code, body, want[i])
		}
		var res struct {
			K         int
			Neighbors []struct {
				Rank     int
				Path     string
				Label    string
				Distance float64
			}
		}
		code, _, body = call(t, "POST", r.url+"/v1/search?k=2", "", b)
		decode(t, body, &res)
		if code != 200 || res.K != 2 || len(res.Neighbors) != 2 || res.Neighbors[0].Distance > 1e-6 || res.Neighbors[0].Rank != 1 {
			t.Fatalf("search %s: %d %s", paths[i], code, body)
		}
		// Equal embeddings (the tiny model maps some images to the same point) tie at distance 0.
		if nb := res.Neighbors[0]; nb.Path != paths[i] && testenv.MaxAbsDiff(want[slicesIndex(paths, nb.Path)], want[i]) > 1e-6 {
			t.Errorf("search %s: nearest %+v", paths[i], nb)
		}
		if nb := res.Neighbors[0]; nb.Label != labels[slicesIndex(paths, nb.Path)] {
			t.Errorf("search %s: nearest %+v has the wrong label", paths[i], nb)
		}
	}
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return 0
}
