package testenv

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// NATS is a nats-server with JetStream of a test's own on 127.0.0.1, its store in a temporary
// folder.
type NATS struct {
	bin, store string
	port       int
	cmd        *exec.Cmd
}

// StartNATS starts a nats-server ($PIPELINE_NATS_SERVER) for the test and stops it when the test
// ends; it skips the test when the variable is unset.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	s := &NATS{bin: NATSServer(t), store: t.TempDir(), port: FreePort(t)}
	s.Start(t)
	t.Cleanup(s.Stop)
	return s
}

// URL is the server's nats://127.0.0.1:PORT.
func (s *NATS) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// Start starts the server (again, after Stop: same port, same store) and waits until it listens.
func (s *NATS) Start(t testing.TB) {
	t.Helper()
	s.cmd = exec.Command(s.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", s.store)
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", s.bin, err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port)); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("nats-server did not listen on 127.0.0.1:%d within 10s", s.port)
}

// Stop stops the server gracefully (SIGTERM: JetStream flushes its file store) and waits.
func (s *NATS) Stop() { s.stop(syscall.SIGTERM) }

// Kill kills the server with SIGKILL (a crash: no flush) and waits.
func (s *NATS) Kill() { s.stop(syscall.SIGKILL) }

func (s *NATS) stop(sig syscall.Signal) {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// FreePort returns a TCP port free on 127.0.0.1 now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
