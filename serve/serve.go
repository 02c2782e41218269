// Package serve puts an exported embedding model (and optionally a gallery index) behind an HTTP
// API: the Open Inference Protocol (KServe v2) over HTTP/JSON, which Triton clients speak, plus
// image endpoints (/v1/embed, /v1/search) that preprocess JPEG or PNG bytes as the model's
// metadata says. Concurrent requests are gathered into one onnxruntime run (dynamic batching);
// a bounded queue answers 503 when full; /metrics exposes Prometheus text.
//
// The files: serve.go (Config, Server), batcher.go (dynamic batching), v2.go (KServe v2),
// v1.go (image endpoints), httperr.go (JSON errors), metrics.go (/metrics), listen.go
// (http.Server timeouts, graceful drain).
package serve

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/grouploss/pipeline/pipeline/export"
	"github.com/grouploss/pipeline/pipeline/gallery"
	"github.com/grouploss/pipeline/pipeline/infer"
)

// Config configures a Server. Zero values take the defaults of DefaultConfig.
type Config struct {
	Model string // embedding model (ONNX with preprocess.* metadata), required
	Index string // gallery index for /v1/search; "" disables search
	Name  string // model name in /v2 URLs; "" is Model's file name without its extension

	MaxBatch   int           // most images per onnxruntime run (and per /v2 infer request)
	MaxWait    time.Duration // how long the first request of a batch waits for others
	NoBatching bool          // one onnxruntime run per request (the reference dynamic batching is measured against)
	QueueSize  int           // requests admitted at once (decoding, queued or running); beyond: 503

	MaxBodyBytes int64 // request body cap (413 beyond)
	MaxPixels    int   // width*height cap of uploaded images (413 beyond, checked from the header)

	ReadHeaderTimeout time.Duration // slow clients: time to send the request headers
	ReadTimeout       time.Duration // time to send the whole request
	WriteTimeout      time.Duration // time from the end of the headers to the end of the answer
	IdleTimeout       time.Duration // keep-alive connections
	DrainTimeout      time.Duration // on shutdown, how long in-flight requests may take

	ORTLibrary string // onnxruntime shared library ("" resolves it)
	Threads    int    // onnxruntime intra-op threads (0: onnxruntime decides)

	Logger *slog.Logger // nil: slog.Default()
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MaxBatch:          32,
		MaxWait:           2 * time.Millisecond,
		QueueSize:         256,
		MaxBodyBytes:      32 << 20,
		MaxPixels:         25_000_000,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       60 * time.Second,
		DrainTimeout:      30 * time.Second,
	}
}

// withDefaults fills the zero fields of c from DefaultConfig and checks the rest.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	set := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	set(&c.MaxBatch, d.MaxBatch)
	set(&c.QueueSize, d.QueueSize)
	set(&c.MaxPixels, d.MaxPixels)
	for _, p := range []struct{ v, def *time.Duration }{
		{&c.ReadHeaderTimeout, &d.ReadHeaderTimeout}, {&c.ReadTimeout, &d.ReadTimeout},
		{&c.WriteTimeout, &d.WriteTimeout}, {&c.IdleTimeout, &d.IdleTimeout}, {&c.DrainTimeout, &d.DrainTimeout},
	} {
		if *p.v == 0 {
			*p.v = *p.def
		}
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.Name == "" {
		c.Name = strings.TrimSuffix(filepath.Base(c.Model), filepath.Ext(c.Model))
	}
	switch {
	case c.Model == "":
		return c, errors.New("serve: no model")
	case c.MaxBatch < 1 || c.QueueSize < 1 || c.MaxPixels < 1 || c.MaxBodyBytes < 1 || c.MaxWait < 0:
		return c, fmt.Errorf("serve: max batch %d, queue %d, max pixels %d, max body %d, max wait %v: want positive values (max wait >= 0)",
			c.MaxBatch, c.QueueSize, c.MaxPixels, c.MaxBodyBytes, c.MaxWait)
	case !export.ValidModelName(c.Name):
		return c, fmt.Errorf("serve: model name %q: want letters, digits, '.', '_' or '-' (it is a URL path element)", c.Name)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// Server answers the HTTP API for one model. Handler is its http.Handler; Serve runs it on a
// listener; Close releases the model.
type Server struct {
	cfg     Config
	emb     *infer.Embedder
	index   *gallery.Index // nil without --index
	input   string         // the model's input name ("images")
	output  string         // the model's output name ("embeddings")
	batch   *batcher
	metrics *metrics
	admit   chan struct{} // one token per admitted request (Config.QueueSize)
	ready   atomic.Bool   // false once draining
	mux     *http.ServeMux
}

// New loads the model (and the index) and starts the batcher.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	emb, err := infer.OpenEmbedder(cfg.Model, infer.WithLibraryPath(cfg.ORTLibrary), infer.WithThreads(cfg.Threads),
		infer.WithBatchSize(cfg.MaxBatch))
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	s := &Server{cfg: cfg, emb: emb, metrics: newMetrics(), admit: make(chan struct{}, cfg.QueueSize)}
	s.input, s.output = emb.Names()
	if cfg.Index != "" {
		if s.index, err = openIndex(cfg.Index, cfg.Model, emb.Dim()); err != nil {
			emb.Close()
			return nil, err
		}
	}
	s.batch = newBatcher(emb, cfg.MaxBatch, cfg.MaxWait, !cfg.NoBatching, cfg.QueueSize, s.metrics)
	s.batch.mayJoin = func(jobs int) bool { return s.metrics.inflight.Load() > int64(jobs) }
	s.routes()
	s.ready.Store(true)
	cfg.Logger.Info("serve: model loaded", "model", cfg.Model, "name", cfg.Name, "input", s.input, "output", s.output,
		"dim", emb.Dim(), "width", emb.Preprocess().Width, "height", emb.Preprocess().Height, "index", cfg.Index,
		"max_batch", cfg.MaxBatch, "max_wait", cfg.MaxWait, "batching", !cfg.NoBatching, "queue", cfg.QueueSize)
	return s, nil
}

// openIndex opens the gallery index and checks that model computed its embeddings.
func openIndex(path, model string, dim int) (*gallery.Index, error) {
	idx, err := gallery.Open(path)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if idx.Dim != dim {
		return nil, fmt.Errorf("serve: model %q makes %d-d embeddings but the index %q holds %d-d ones", model, dim, path, idx.Dim)
	}
	if idx.Model.SHA256 != "" {
		id, err := gallery.IdentifyModel(model)
		if err != nil {
			return nil, fmt.Errorf("serve: %w", err)
		}
		if id.SHA256 != idx.Model.SHA256 {
			return nil, fmt.Errorf("serve: model %q (sha256 %.12s…) is not the model the index %q was built with (%q, sha256 %.12s…): "+
				"its embeddings would not be comparable", model, id.SHA256, path, idx.Model.Path, idx.Model.SHA256)
		}
	}
	return idx, nil
}

// Handler returns the HTTP handler: every route, with request logging and metrics.
func (s *Server) Handler() http.Handler { return s.mux }

// Close stops the batcher (after the queued runs) and releases the model. Call it after the
// HTTP server has stopped.
func (s *Server) Close() error {
	s.ready.Store(false)
	s.batch.close()
	return s.emb.Close()
}
