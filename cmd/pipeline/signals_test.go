package main

import (
	"io"
	"syscall"
	"testing"
	"time"
)

// TestInterruptContext: the first SIGTERM cancels the context; a command that does not return
// (blocked where it cannot see the context: before, a FIFO opened as --data ignored SIGINT and
// SIGTERM and only SIGKILL ended it) is ended with exit code 130 by a second signal or after the
// grace period.
func TestInterruptContext(t *testing.T) {
	for _, second := range []bool{true, false} {
		exited := make(chan int, 1)
		grace := 300 * time.Millisecond
		if second {
			grace = time.Minute // so that only the second signal can exit in time
		}
		ctx, stop := interruptContext(io.Discard, grace, func(c int) { exited <- c })
		if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("SIGTERM did not cancel the context")
		}
		if second {
			syscall.Kill(syscall.Getpid(), syscall.SIGINT)
		}
		select {
		case c := <-exited:
			if c != 130 {
				t.Fatalf("exit(%d), want 130", c)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("still running 10 s after the signal (second signal %v)", second)
		}
		stop()
	}
	// A command that returns before any signal is never exited.
	exited := make(chan int, 1)
	_, stop := interruptContext(io.Discard, 50*time.Millisecond, func(c int) { exited <- c })
	stop()
	select {
	case c := <-exited:
		t.Fatalf("exit(%d) after stop", c)
	case <-time.After(200 * time.Millisecond):
	}
}
