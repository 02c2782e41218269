# Everything a fresh machine needs is installed by these targets: Go modules (go build fetches them),
# onnxruntime 1.30.0 (npm pack onnxruntime-node, checksummed, into .deps/), and Debian's
# libjpeg62-turbo-dev when jpeglib.h is missing (the JPEG decoder; `GOFLAGS=-tags=nolibjpeg` builds
# without it, decoding with Go's slower image/jpeg), and Debian's libopenblas-dev when cblas.h is missing
# (the float32 matrix product of evaluation and search; `GOFLAGS=-tags=noopenblas` builds without it,
# with a plain Go loop about 24x slower).
SHELL := bash
ORT_DIR   ?= $(CURDIR)/.deps/onnxruntime
ORT_LIB   ?= $(ORT_DIR)/libonnxruntime.so.1
SHARED    ?= $(abspath $(CURDIR)/../shared)
ARGS      ?=
GO        ?= go
export ONNXRUNTIME_SHARED_LIBRARY_PATH ?= $(ORT_LIB)
export PIPELINE_SHARED_DIR ?= $(SHARED)
export CGO_ENABLED := 1
# pglite (PostgreSQL + pgvector compiled to WASM) for the gallery tests, from npm
PGLITE_DIR ?= $(CURDIR)/.deps/pglite
export PGLITE_DIR
# nats-server and pglite on 127.0.0.1 for the duration of a command (scripts/with-servers.sh)
WITH_SERVERS := ./scripts/with-servers.sh

.PHONY: run test build ort libjpeg openblas onnx-testdata chromium fashion-mnist pytorch bench vet clean fuzz race nats-server pglite scale-test
## run: the main job on its default config (CUB-100 protocol); pass flags with ARGS="..."
run: build
	./bin/pipeline run $(ARGS)

## test: vet and every test, with onnxruntime, ONNX's operator conformance cases and ../shared provided
## (the data package also in its pure-Go build, -tags nolibjpeg; the matrix product and its users
## and the PCA start also without OpenBLAS, -tags noopenblas), under nats-server and pglite (the queue and pgvector
## tests, the multi-process scale test: `make scale-test` alone)
test: ort libjpeg openblas onnx-testdata chromium fashion-mnist nats-server pglite pytorch
	$(GO) vet ./...
	$(GO) vet -tags nolibjpeg,noopenblas ./...
	$(GO) test -count=1 -tags nolibjpeg ./pipeline/data
	$(GO) test -count=1 -short -tags noopenblas ./internal/matmul ./internal/lapack ./pipeline/metrics ./pipeline/train
	$(WITH_SERVERS) $(GO) test -count=1 -timeout 40m ./...
	$(WITH_SERVERS) $(GO) test -race -short -count=1 -timeout 25m ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(CI_FUZZTIME)

## race: every test under the race detector, the minutes-long end-to-end runs on the real model too
## (`make test` runs the whole suite under -race with -short, which skips only those: they ran
## without -race just before)
race: ort libjpeg openblas onnx-testdata
	$(GO) test -race -count=1 -timeout 60m ./...

## build: bin/pipeline, with onnxruntime installed beside it (.deps/) so the binary runs as is
build: ort libjpeg openblas
	$(GO) build -o bin/pipeline ./cmd/pipeline

ort: $(ORT_LIB)

# libjpeg-turbo's headers for the cgo JPEG decoder (pipeline/data/libjpeg.go), from Debian when
# missing (as root; otherwise say how). Builds tagged nolibjpeg do not need it.
libjpeg:
	@case "$$GOFLAGS" in *nolibjpeg*) exit 0;; esac; \
	test -f /usr/include/jpeglib.h || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjpeg62-turbo-dev) >/dev/null; \
	  else echo "make: libjpeg-turbo's headers are missing: run 'sudo apt-get install libjpeg62-turbo-dev', or build with GOFLAGS=-tags=nolibjpeg (slower JPEG decoding)"; exit 1; fi; }

# OpenBLAS for the float32 matrix product (internal/matmul/openblas.go), from Debian when missing (as
# root; otherwise say how). Builds tagged noopenblas do not need it.
openblas:
	@case "$$GOFLAGS" in *noopenblas*) exit 0;; esac; \
	test -f /usr/include/x86_64-linux-gnu/cblas.h -o -f /usr/include/cblas.h || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev) >/dev/null; \
	  else echo "make: OpenBLAS is missing: run 'sudo apt-get install libopenblas-dev', or build with GOFLAGS=-tags=noopenblas (slower evaluation and search)"; exit 1; fi; }

# ONNX's own per-operator test cases (Debian's libonnx-testdata), for the conformance tests of the
# trainable-graph decoder. Installed with apt when missing (CI runs as root).
onnx-testdata:
	@test -d /usr/share/libonnx-testdata/data/node || dpkg -s libonnx-testdata >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libonnx-testdata) >/dev/null; \
	  else echo "make: libonnx-testdata is missing: run 'sudo apt-get install libonnx-testdata' (the conformance tests skip without it)"; fi; }

$(ORT_LIB):
	./scripts/install-onnxruntime.sh $(ORT_DIR)

## scale-test: nats-server and pglite on 127.0.0.1, a coordinator and 3 worker processes over a few
## hundred CUB images, one worker SIGKILLed mid-batch, the collected embeddings against a
## single-process embed, the gallery loaded into pgvector and searched against the flat index
scale-test: ort libjpeg nats-server pglite
	$(WITH_SERVERS) $(GO) test -count=1 -timeout 20m -run '^TestScaleQueue$$' -v ./cmd/pipeline

# Debian's nats-server (JetStream) for the work-queue tests, when missing (as root; otherwise say how).
nats-server:
	@command -v nats-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server) >/dev/null; \
	  else echo "make: nats-server is missing: run 'sudo apt-get install nats-server'"; exit 1; fi; }

# pglite's socket server with pgvector (npm; Debian has no pgvector package) into $(PGLITE_DIR).
pglite: $(PGLITE_DIR)/node_modules/.bin/pglite-server
$(PGLITE_DIR)/node_modules/.bin/pglite-server:
	mkdir -p $(PGLITE_DIR)
	npm install --prefix $(PGLITE_DIR) --no-audit --no-fund --silent @electric-sql/pglite-socket@0.2.17 @electric-sql/pglite@0.5.14 @electric-sql/pglite-pgvector@0.0.15

# Headless Chromium renders report.html in the report test (Debian's chromium; skipped without it).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; \
	  else echo "make: chromium is missing: run 'sudo apt-get install chromium' (the report's browser test skips without it)"; fi; }

# Debian's python3-torch, python3-onnx and python3-sklearn: the PyTorch references that tests and
# `pipeline bench --reference-python` compare with (the tail step, the head step, whose reference script imports sklearn,
# the goldens' scripts); cross-checks only, never part of the product.
pytorch:
	@/usr/bin/python3 -c 'import torch, onnx, sklearn' >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-onnx python3-sklearn) >/dev/null; \
	  else echo "make: PyTorch is missing: run 'sudo apt-get install python3-torch python3-onnx python3-sklearn' (the PyTorch comparisons skip without it)"; fi; }

# Debian's dataset-fashion-mnist: real 28x28 grayscale images for the data-shape tests
# (cmd/pipeline/datashapes_test.go; skipped without it) and `go run ./scripts/fashion-mnist`.
fashion-mnist:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null; \
	  else echo "make: dataset-fashion-mnist is missing: run 'sudo apt-get install dataset-fashion-mnist' (the Fashion-MNIST data-shape test skips without it)"; fi; }

## bench: speed benchmarks: `pipeline bench` (extraction: pipeline vs bare onnxruntime; head step: ours vs
## the PyTorch reference when Debian's python3-torch is installed) into runs/bench.json, then the Go benchmarks
bench: build
	mkdir -p runs
	./bin/pipeline bench --out runs/bench.json $$( [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import torch, sklearn' 2>/dev/null && echo --reference-python /usr/bin/python3 )
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

## fuzz: run each fuzz target for FUZZTIME (default 60s) on top of its seed corpus in testdata/fuzz/;
## `make test` only replays the seed corpora. Minimization is capped (it would take most of a short run).
FUZZTIME ?= 60s
## `make test` runs each target briefly on top of the seed replay: 10000 new inputs each (1-10 s here).
## A count, not a duration: with a duration, Go 1.26's fuzz coordinator can report its own deadline as a
## failure ("context deadline exceeded", no crasher written) when the time runs out while a worker is
## busy, as it did here under load (golang/go#75804, fixed in Go 1.27); a count has no deadline.
CI_FUZZTIME ?= 10000x
FUZZ_TARGETS := ./backbone:FuzzInspectBytes ./pipeline/data:FuzzParseManifest ./pipeline/data:FuzzDecodeJPEG ./pipeline/config:FuzzParseConfig \
  ./pipeline/data:FuzzImageFolder ./pipeline/npy:FuzzRead
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "fuzz $${t#*:} ($${t%%:*}) for $(FUZZTIME)"; \
	  $(GO) test -list "^$${t#*:}\$$" "$${t%%:*}" | grep -qx "$${t#*:}" || { echo "make: no fuzz target $${t#*:} in $${t%%:*}" >&2; exit 1; }; \
	  $(GO) test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 100x "$${t%%:*}"; \
	done

clean:
	rm -rf bin .deps
