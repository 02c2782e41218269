package dist

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/grouploss/pipeline/internal/testenv"
)

// natsServer is a nats-server with JetStream on 127.0.0.1, its store in a temporary folder.
type natsServer struct {
	bin, store string
	port       int
	cmd        *exec.Cmd
}

// startNATS starts a nats-server of its own for the test (the restart test stops and restarts
// it) and stops it at the end; it skips the test when PIPELINE_NATS_SERVER is unset.
func startNATS(t *testing.T) *natsServer {
	t.Helper()
	s := &natsServer{bin: testenv.NATSServer(t), store: t.TempDir(), port: freePort(t)}
	s.start(t)
	t.Cleanup(s.stop)
	return s
}

func (s *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

func (s *natsServer) start(t *testing.T) {
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

// stop stops the server gracefully (SIGTERM: JetStream flushes its file store) and waits.
func (s *natsServer) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
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

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
