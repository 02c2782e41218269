package serve

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"
)

// routes registers every endpoint. Routes that run the model are admitted: at most
// Config.QueueSize of them at once, the rest answered 503 with Retry-After at once.
func (s *Server) routes() {
	s.mux = http.NewServeMux()
	s.handle("GET /v2", "/v2", false, s.serverMetadata)
	s.handle("GET /v2/health/live", "/v2/health/live", false, s.live)
	s.handle("GET /v2/health/ready", "/v2/health/ready", false, s.readyz)
	s.handle("GET /v2/models/{name}", "/v2/models/{name}", false, s.modelMetadata)
	s.handle("GET /v2/models/{name}/versions/{version}", "/v2/models/{name}", false, s.modelMetadata)
	s.handle("GET /v2/models/{name}/ready", "/v2/models/{name}/ready", false, s.modelReady)
	s.handle("GET /v2/models/{name}/versions/{version}/ready", "/v2/models/{name}/ready", false, s.modelReady)
	s.handle("POST /v2/models/{name}/infer", "/v2/models/{name}/infer", true, s.infer)
	s.handle("POST /v2/models/{name}/versions/{version}/infer", "/v2/models/{name}/infer", true, s.infer)
	s.handle("POST /v1/embed", "/v1/embed", true, s.embed)
	s.handle("POST /v1/search", "/v1/search", true, s.search)
	s.mux.Handle("GET /metrics", s.metrics)
	s.handle("/", "other", false, func(w http.ResponseWriter, r *http.Request) error {
		return &apiError{http.StatusNotFound, "no route " + r.Method + " " + r.URL.Path +
			": see GET /v2/models/" + s.cfg.Name + ", POST /v2/models/" + s.cfg.Name + "/infer, POST /v1/embed, POST /v1/search"}
	})
}

// statusWriter records the status and size of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

// handle registers h under pattern with the body cap, admission (when admit), a JSON answer for
// its error, one log line and the metrics of route (a fixed label, never the raw path).
func (s *Server) handle(pattern, route string, admit bool, h func(w http.ResponseWriter, r *http.Request) error) {
	s.mux.HandleFunc(pattern, func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w := &statusWriter{ResponseWriter: rw}
		var err error
		if admit {
			select {
			case s.admit <- struct{}{}:
				s.metrics.inflight.Add(1)
				r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
				err = h(w, r)
				s.metrics.inflight.Add(-1)
				<-s.admit
			default:
				err = errOverloaded
			}
		} else {
			err = h(w, r)
		}
		if err != nil {
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				w.status = 499 // the client went away: nothing to answer
			} else {
				writeError(w, err)
			}
		}
		d := time.Since(start)
		s.metrics.observeRequest(route, w.status, d)
		level := slog.LevelInfo
		if w.status >= 500 {
			level = slog.LevelWarn
		}
		attrs := []any{"method", r.Method, "path", r.URL.Path, "status", w.status, "bytes", w.bytes,
			"ms", float64(d.Microseconds()) / 1000, "remote", r.RemoteAddr}
		if err != nil {
			attrs = append(attrs, "error", err.Error())
		}
		s.cfg.Logger.Log(r.Context(), level, "request", attrs...)
	})
}
