package serve

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"runtime"
	"strconv"

	"github.com/grouploss/pipeline/pipeline/data"
)

// maxK bounds /v1/search's k.
const maxK = 1000

// decodeSlots bounds concurrent image decodes: a decoded image takes up to 3·MaxPixels bytes, so
// admitted requests wait here rather than all holding one at once.
var decodeSlots = make(chan struct{}, runtime.GOMAXPROCS(0))

// embed answers POST /v1/embed: one JPEG or PNG image (raw body or a multipart file) ->
// {"model", "dim", "embedding"}.
func (s *Server) embed(w http.ResponseWriter, r *http.Request) error {
	v, err := s.embedImage(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"model": s.cfg.Name, "dim": len(v), "embedding": v})
	return nil
}

// search answers POST /v1/search?k=5: the image's k nearest gallery entries.
func (s *Server) search(w http.ResponseWriter, r *http.Request) error {
	if s.index == nil {
		return &apiError{http.StatusNotFound, "no gallery: start `pipeline serve` with --index FILE to search"}
	}
	k := 5
	if q := r.URL.Query().Get("k"); q != "" {
		var err error
		if k, err = strconv.Atoi(q); err != nil || k < 1 || k > maxK {
			return badRequest("query parameter k=%q: want an integer from 1 to %d", q, maxK)
		}
	}
	v, err := s.embedImage(r)
	if err != nil {
		return err
	}
	res, err := s.index.Search(v, 1, k)
	if err != nil {
		return err
	}
	type neighbor struct {
		Rank     int     `json:"rank"`
		Path     string  `json:"path"`
		Label    string  `json:"label"`
		Distance float64 `json:"distance"`
		Row      int     `json:"row"`
	}
	out := make([]neighbor, len(res[0]))
	for i, nb := range res[0] {
		out[i] = neighbor{i + 1, s.index.Paths[nb.Row], s.index.Labels[nb.Row], nb.Distance, nb.Row}
	}
	writeJSON(w, http.StatusOK, map[string]any{"model": s.cfg.Name, "k": k, "neighbors": out})
	return nil
}

// embedImage reads the request's image, preprocesses it as the model's metadata says and returns
// its embedding.
func (s *Server) embedImage(r *http.Request) ([]float32, error) {
	name, b, err := readImage(r)
	if err != nil {
		return nil, err
	}
	pre := s.emb.Preprocess()
	pre.MaxPixels = s.cfg.MaxPixels
	in := make([]float32, pre.Size())
	select {
	case decodeSlots <- struct{}{}:
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	err = pre.TensorBytes(name, b, in)
	<-decodeSlots
	if err != nil {
		if errors.Is(err, data.ErrTooLarge) {
			return nil, tooLarge("%v", err)
		}
		return nil, badRequest("%v: send a JPEG or PNG image", err)
	}
	return s.batch.submit(r.Context(), in, 1)
}

// readImage returns the image bytes of the request and a name for errors: the raw body, or with
// a multipart/form-data body the part named "image", else the first file part.
func readImage(r *http.Request) (string, []byte, error) {
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return "", nil, err
		}
		if len(b) == 0 {
			return "", nil, badRequest("empty request body: send a JPEG or PNG image (raw body or multipart file)")
		}
		return "request body", b, nil
	}
	if params["boundary"] == "" {
		return "", nil, badRequest("multipart/form-data body without a boundary parameter")
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return "", nil, badRequest("multipart body with no file part: send the image as a part named \"image\"")
		}
		if err != nil {
			var mb *http.MaxBytesError
			if errors.As(err, &mb) {
				return "", nil, err
			}
			return "", nil, badRequest("multipart body: %v", err)
		}
		if p.FormName() != "image" && p.FileName() == "" {
			continue
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return "", nil, err
		}
		name := fmt.Sprintf("multipart part %q", p.FormName())
		if p.FileName() != "" {
			name = fmt.Sprintf("multipart file %q", p.FileName())
		}
		if len(b) == 0 {
			return "", nil, badRequest("%s is empty: send a JPEG or PNG image", name)
		}
		return name, b, nil
	}
}
