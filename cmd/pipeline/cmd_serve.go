package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	"github.com/grouploss/pipeline/serve"
)

func cmdServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	cfg := serve.DefaultConfig()
	var addr, logLevel string
	var maxMB int64
	fs := newFlagSet("pipeline serve", stderr, "usage: pipeline serve --model MODEL.onnx [--index GALLERY] [--addr 127.0.0.1:8080] [--name NAME] [flags]\n\n"+
		"Serves the embedding model over HTTP until SIGTERM or Ctrl-C, then drains in-flight requests and exits 0:\n"+
		"  GET  /v2/health/live, /v2/health/ready, /v2/models/NAME      Open Inference Protocol (KServe v2)\n"+
		"  POST /v2/models/NAME/infer   input \"images\" FP32 [n,3,H,W] -> output \"embeddings\" FP32 [n,D]\n"+
		"  POST /v1/embed               a JPEG or PNG (raw body or multipart file \"image\") -> its embedding\n"+
		"  POST /v1/search?k=5          an image -> its k nearest gallery entries (with --index)\n"+
		"  GET  /metrics                Prometheus text\n"+
		"Logs are JSON lines (slog) on stderr.\n\n")
	fs.StringVar(&cfg.Model, "model", "", "embedding model `FILE` (model.onnx of a run folder, or any model with preprocess.* metadata)")
	fs.StringVar(&cfg.Index, "index", "", "gallery index `FILE` (`pipeline index`) for /v1/search")
	fs.StringVar(&addr, "addr", "127.0.0.1:8080", "listen `address` (host:port; port 0 picks a free one, logged)")
	fs.StringVar(&cfg.Name, "name", "", "model name in /v2 URLs (default: the model file name without extension)")
	fs.IntVar(&cfg.MaxBatch, "max-batch", cfg.MaxBatch, "most images per onnxruntime run, and per /v2 infer request")
	fs.DurationVar(&cfg.MaxWait, "max-wait", cfg.MaxWait, "how long a request waits for others to share its run")
	fs.BoolVar(&cfg.NoBatching, "no-batching", false, "one onnxruntime run per request (no dynamic batching)")
	fs.IntVar(&cfg.QueueSize, "queue", cfg.QueueSize, "requests admitted at once; beyond, 503 with Retry-After")
	fs.Int64Var(&maxMB, "max-body-mb", cfg.MaxBodyBytes>>20, "request body cap in MiB (413 beyond)")
	fs.IntVar(&cfg.MaxPixels, "max-pixels", cfg.MaxPixels, "width*height cap of uploaded images (413 beyond)")
	fs.DurationVar(&cfg.ReadHeaderTimeout, "read-header-timeout", cfg.ReadHeaderTimeout, "time a client has to send the request headers")
	fs.DurationVar(&cfg.ReadTimeout, "read-timeout", cfg.ReadTimeout, "time a client has to send the whole request")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", cfg.WriteTimeout, "time to answer, from the end of the request headers")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "on SIGTERM, how long in-flight requests may take")
	onnxruntimeFlag(fs, &cfg.ORTLibrary)
	threadsFlag(fs, &cfg.Threads)
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	if help, err := parseFlags(fs, args, ""); help || err != nil {
		return err
	}
	if cfg.Model == "" {
		return fmt.Errorf("%w: serve needs --model", errUsage)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, logLevel)
	}
	if maxMB < 1 {
		return fmt.Errorf("%w: --max-body-mb %d, want >= 1", errUsage, maxMB)
	}
	cfg.MaxBodyBytes = maxMB << 20
	cfg.Logger = slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	if host, _, err := net.SplitHostPort(addr); err == nil && host != "127.0.0.1" && host != "localhost" && !strings.HasPrefix(host, "[::1]") {
		cfg.Logger.Warn("serve: listening beyond loopback: the API has no authentication", "addr", addr)
	}
	s, err := serve.New(cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return s.Serve(ctx, ln)
}
