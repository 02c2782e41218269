package testenv

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The servers of the distributed tests, started on 127.0.0.1 by scripts/with-servers.sh (which
// `make test` and `make scale-test` run the tests under).
const (
	NATSServerEnv = "PIPELINE_NATS_SERVER" // the nats-server binary, for tests that start their own
	NATSURLEnv    = "PIPELINE_NATS_URL"    // nats://127.0.0.1:PORT of a server with JetStream
	PostgresEnv   = "PIPELINE_PG_URL"      // postgres://...@127.0.0.1:PORT/postgres with pgvector
)

func needEnv(t testing.TB, name, what string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Skipf("%s is unset: run `make test` or `make scale-test`, which start %s on 127.0.0.1 and set it", name, what)
	}
	return v
}

// NATSServer returns the nats-server binary of $PIPELINE_NATS_SERVER, or skips the test.
func NATSServer(t testing.TB) string {
	t.Helper()
	return needEnv(t, NATSServerEnv, "nothing (it names Debian's nats-server binary)")
}

// NATSURL returns the NATS server of $PIPELINE_NATS_URL, or skips the test.
func NATSURL(t testing.TB) string {
	t.Helper()
	return needEnv(t, NATSURLEnv, "nats-server with JetStream")
}

// Postgres returns the PostgreSQL + pgvector server of $PIPELINE_PG_URL, or skips the test. The
// test holds the server until it ends: the pglite server serves one client at a time and one
// backend session for all, so tests of different packages take turns (a lock file per server).
func Postgres(t testing.TB) string {
	t.Helper()
	u := needEnv(t, PostgresEnv, "a pglite server (PostgreSQL with pgvector)")
	host := u
	if p, err := url.Parse(u); err == nil {
		host = p.Host
	}
	lock := filepath.Join(os.TempDir(), "pipeline-pg-"+strings.NewReplacer(":", "_", "/", "_").Replace(host)+".lock")
	f, err := os.OpenFile(lock, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		t.Fatalf("lock %s: %v", lock, err)
	}
	t.Cleanup(func() { f.Close() })
	return u
}
