package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
)

// Serve answers on ln until ctx is cancelled, then drains: the listener closes, in-flight
// requests finish (up to Config.DrainTimeout) and Serve returns nil. The timeouts of Config
// bound slow clients: headers, whole request, answer, idle keep-alive.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	log := s.cfg.Logger
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("serve: listening", "addr", ln.Addr().String(), "model", s.cfg.Name)
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.ready.Store(false)
	log.Info("serve: draining", "inflight", s.metrics.inflight.Load(), "timeout", s.cfg.DrainTimeout)
	dctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	err := srv.Shutdown(dctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", serr)
	}
	if err != nil {
		return fmt.Errorf("serve: drain: requests still running after %v: %w", s.cfg.DrainTimeout, err)
	}
	log.Info("serve: drained")
	return nil
}
