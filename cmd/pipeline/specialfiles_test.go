//go:build unix

package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunDataFIFO: `run --data x.csv` where x.csv is a FIFO fails at once, naming the file (it
// blocked forever and ignored SIGINT and SIGTERM).
func TestRunDataFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "x.csv")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	done := make(chan badResult, 1)
	go func() { done <- badRun("--data", fifo, "--out", filepath.Join(t.TempDir(), "run")) }()
	select {
	case r := <-done:
		if r.code == 0 || !strings.Contains(r.stderr, "not a regular file") || !strings.Contains(r.stderr, fifo) {
			t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run --data FIFO still blocked after 30 s")
	}
}
