#!/usr/bin/env bash
# Runs a command with the servers of the distributed tests on 127.0.0.1, each on a free port:
# nats-server with JetStream (store in a temporary folder) and a pglite server (PostgreSQL with
# pgvector, compiled to WASM; PGLITE_DIR holds its npm install, `make pglite`). It exports
#   PIPELINE_NATS_SERVER  the nats-server binary (tests that restart a server start their own)
#   PIPELINE_NATS_URL     nats://127.0.0.1:PORT
#   PIPELINE_PG_URL       postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
# and stops both servers when the command ends, however it ends. Exit status: the command's.
set -euo pipefail
PGLITE_DIR=${PGLITE_DIR:-.deps/pglite}
PGLITE_BIN="$PGLITE_DIR/node_modules/.bin/pglite-server"
NATS_BIN=$(command -v nats-server || true)
[ -n "$NATS_BIN" ] || { echo "with-servers: nats-server is missing: run 'make nats-server'" >&2; exit 1; }
[ -x "$PGLITE_BIN" ] || { echo "with-servers: $PGLITE_BIN is missing: run 'make pglite'" >&2; exit 1; }

free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
wait_port() { # PORT SECONDS NAME LOG
  for _ in $(seq $(($2 * 10))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "with-servers: $3 did not listen on 127.0.0.1:$1 within $2s; its log:" >&2; cat "$4" >&2; return 1
}

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nats_port=$(free_port)
"$NATS_BIN" -a 127.0.0.1 -p "$nats_port" -js -sd "$work/jetstream" >"$work/nats.log" 2>&1 &
pids+=($!)
pg_port=$(free_port)
# -m 4: a test's next connection may arrive while pglite still counts its previous one; the
# tests still take turns (a lock file, internal/testenv), since pglite has one backend session.
"$PGLITE_BIN" -h 127.0.0.1 -p "$pg_port" -m 4 -e @electric-sql/pglite-pgvector:vector >"$work/pglite.log" 2>&1 &
pids+=($!)
wait_port "$nats_port" 20 nats-server "$work/nats.log"
wait_port "$pg_port" 120 pglite-server "$work/pglite.log"

export PIPELINE_NATS_SERVER="$NATS_BIN"
export PIPELINE_NATS_URL="nats://127.0.0.1:$nats_port"
export PIPELINE_PG_URL="postgres://postgres@127.0.0.1:$pg_port/postgres?sslmode=disable"
echo "with-servers: nats-server on 127.0.0.1:$nats_port (JetStream), pglite on 127.0.0.1:$pg_port" >&2
"$@"
