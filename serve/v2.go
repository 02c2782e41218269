package serve

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"

	"github.com/grouploss/pipeline/pipeline"
)

// The Open Inference Protocol (KServe v2), HTTP/JSON, with Triton's binary tensor data extension:
// https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/ and
// https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md

// binaryHeader is the binary data extension's header: the length of the JSON part of the body.
const binaryHeader = "Inference-Header-Content-Length"

type tensorMetadata struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

func (s *Server) serverMetadata(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"name": "pipeline", "version": pipeline.Version,
		"extensions": []string{"binary_tensor_data"}})
	return nil
}

func (s *Server) live(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]bool{"live": true})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) error {
	if !s.ready.Load() {
		return &apiError{http.StatusServiceUnavailable, "not ready: shutting down"}
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ready": true})
	return nil
}

// checkModel checks the {name} and {version} of a /v2/models route.
func (s *Server) checkModel(r *http.Request) error {
	if n := r.PathValue("name"); n != s.cfg.Name {
		return &apiError{http.StatusNotFound, fmt.Sprintf("unknown model %q: this server serves %q", n, s.cfg.Name)}
	}
	if v := r.PathValue("version"); v != "" && v != "1" {
		return &apiError{http.StatusNotFound, fmt.Sprintf("model %q has no version %q: it has version \"1\"", s.cfg.Name, v)}
	}
	return nil
}

func (s *Server) modelReady(w http.ResponseWriter, r *http.Request) error {
	if err := s.checkModel(r); err != nil {
		return err
	}
	return s.readyz(w, r)
}

func (s *Server) modelMetadata(w http.ResponseWriter, r *http.Request) error {
	if err := s.checkModel(r); err != nil {
		return err
	}
	pre := s.emb.Preprocess()
	writeJSON(w, http.StatusOK, map[string]any{
		"name":       s.cfg.Name,
		"versions":   []string{"1"},
		"platform":   "onnxruntime_onnx",
		"inputs":     []tensorMetadata{{s.input, "FP32", []int64{-1, 3, int64(pre.Height), int64(pre.Width)}}},
		"outputs":    []tensorMetadata{{s.output, "FP32", []int64{-1, int64(s.emb.Dim())}}},
		"parameters": map[string]any{"max_batch_size": s.cfg.MaxBatch, "preprocess": pre.Metadata()},
	})
	return nil
}

type inferInput struct {
	Name       string          `json:"name"`
	Shape      []int64         `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
}

type inferRequest struct {
	ID         string         `json:"id,omitempty"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Inputs     []inferInput   `json:"inputs"`
	Outputs    []struct {
		Name       string         `json:"name"`
		Parameters map[string]any `json:"parameters,omitempty"`
	} `json:"outputs,omitempty"`
}

type inferOutput struct {
	Name       string         `json:"name"`
	Datatype   string         `json:"datatype"`
	Shape      []int64        `json:"shape"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Data       []float32      `json:"data,omitempty"`
}

// infer answers POST /v2/models/{name}/infer: the input tensor [n,3,H,W] FP32 (JSON data, flat
// or nested, or binary), the output tensor [n,D] FP32 (JSON, or binary when asked).
func (s *Server) infer(w http.ResponseWriter, r *http.Request) error {
	if err := s.checkModel(r); err != nil {
		return err
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	head, bin := body, []byte(nil)
	if hl := r.Header.Get(binaryHeader); hl != "" {
		n, err := strconv.Atoi(hl)
		if err != nil || n < 0 || n > len(body) {
			return badRequest("header %s: %q is not a length within the %d-byte body", binaryHeader, hl, len(body))
		}
		head, bin = body[:n], body[n:]
	}
	var req inferRequest
	if err := json.Unmarshal(head, &req); err != nil {
		return badRequest("infer request: not the JSON of an inference request: %v", err)
	}
	in, n, err := s.inputTensor(req, bin)
	if err != nil {
		return err
	}
	binOut := boolParam(req.Parameters, "binary_data_output")
	for _, o := range req.Outputs {
		if o.Name != s.output {
			return badRequest("outputs: unknown output %q: the model's output is %q", o.Name, s.output)
		}
		if v, ok := o.Parameters["binary_data"].(bool); ok {
			binOut = v
		}
	}
	emb, err := s.batch.submit(r.Context(), in, n)
	if err != nil {
		return err
	}
	out := inferOutput{Name: s.output, Datatype: "FP32", Shape: []int64{int64(n), int64(s.emb.Dim())}}
	resp := map[string]any{"model_name": s.cfg.Name, "model_version": "1", "outputs": []*inferOutput{&out}}
	if req.ID != "" {
		resp["id"] = req.ID
	}
	if !binOut {
		out.Data = emb
		writeJSON(w, http.StatusOK, resp)
		return nil
	}
	out.Parameters = map[string]any{"binary_data_size": 4 * len(emb)}
	js, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(binaryHeader, strconv.Itoa(len(js)))
	w.Header().Set("Content-Length", strconv.Itoa(len(js)+4*len(emb)))
	w.WriteHeader(http.StatusOK)
	w.Write(js)
	raw := make([]byte, 4*len(emb))
	for i, v := range emb {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	w.Write(raw)
	return nil
}

func boolParam(p map[string]any, key string) bool {
	v, _ := p[key].(bool)
	return v
}

// inputTensor checks the request's one input against the model ([n,3,H,W] FP32, 1 <= n <=
// MaxBatch) and returns its values and n. bin is the binary part of the body (or nil).
func (s *Server) inputTensor(req inferRequest, bin []byte) ([]float32, int, error) {
	pre := s.emb.Preprocess()
	want := []int64{-1, 3, int64(pre.Height), int64(pre.Width)}
	if len(req.Inputs) != 1 {
		return nil, 0, badRequest("inputs: %d tensors, the model takes one: %q FP32 %v", len(req.Inputs), s.input, want)
	}
	t := req.Inputs[0]
	switch {
	case t.Name != s.input:
		return nil, 0, badRequest("inputs[0]: name %q, the model's input is %q", t.Name, s.input)
	case t.Datatype != "FP32":
		return nil, 0, badRequest("input %q: datatype %q, want \"FP32\"", t.Name, t.Datatype)
	case len(t.Shape) != 4 || t.Shape[1] != want[1] || t.Shape[2] != want[2] || t.Shape[3] != want[3]:
		return nil, 0, badRequest("input %q: shape %v, want %v (NCHW, batch n first)", t.Name, t.Shape, want)
	case t.Shape[0] < 1 || t.Shape[0] > int64(s.cfg.MaxBatch):
		return nil, 0, badRequest("input %q: batch %d, want 1 to %d (max_batch_size)", t.Name, t.Shape[0], s.cfg.MaxBatch)
	}
	n := int(t.Shape[0])
	count := n * pre.Size()
	if size, ok := t.Parameters["binary_data_size"]; ok {
		f, isNum := size.(float64)
		if !isNum || int(f) != 4*count || len(bin) != 4*count {
			return nil, 0, badRequest("input %q: binary_data_size %v and %d binary bytes, want %d (%d FP32 values)", t.Name, size, len(bin), 4*count, count)
		}
		vals := make([]float32, count)
		for i := range vals {
			vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(bin[4*i:]))
		}
		return vals, n, checkFinite(t.Name, vals)
	}
	if len(bin) != 0 {
		return nil, 0, badRequest("input %q: %d bytes of binary data but no binary_data_size parameter", t.Name, len(bin))
	}
	vals, err := flatFloats(t.Data, count)
	if err != nil {
		return nil, 0, badRequest("input %q: data: %v", t.Name, err)
	}
	return vals, n, checkFinite(t.Name, vals)
}

// flatFloats reads the JSON data of a tensor, flat or nested in row-major order, expecting count
// numbers.
func flatFloats(raw json.RawMessage, count int) ([]float32, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("missing: want %d FP32 values", count)
	}
	vals := make([]float32, 0, count)
	if err := json.Unmarshal(raw, &vals); err != nil {
		// Not a flat array of numbers: nested arrays (or garbage).
		var tree any
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&tree); err != nil {
			return nil, err
		}
		vals = vals[:0]
		if err := flatten(tree, &vals, count, 0); err != nil {
			return nil, err
		}
	}
	if len(vals) != count {
		return nil, fmt.Errorf("%d values, the shape holds %d", len(vals), count)
	}
	return vals, nil
}

func flatten(v any, out *[]float32, count, depth int) error {
	switch x := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 32)
		if err != nil {
			return fmt.Errorf("value %d: %v", len(*out), err)
		}
		if len(*out) >= count {
			return fmt.Errorf("more than the %d values the shape holds", count)
		}
		*out = append(*out, float32(f))
	case []any:
		if depth > 8 {
			return fmt.Errorf("arrays nested deeper than the tensor's 4 axes")
		}
		for _, e := range x {
			if err := flatten(e, out, count, depth+1); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("value %d is %T, want a number", len(*out), v)
	}
	return nil
}

// checkFinite refuses NaN and Inf inputs (possible in binary data).
func checkFinite(name string, vals []float32) error {
	for i, v := range vals {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return badRequest("input %q: value %d is %v", name, i, v)
		}
	}
	return nil
}
