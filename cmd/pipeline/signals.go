package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// interruptGrace is how long a command may take to stop after SIGINT or SIGTERM (to finish the
// checkpoint it is writing and metrics.json) before the process exits anyway.
const interruptGrace = 30 * time.Second

// interruptContext returns a context cancelled by the first SIGINT or SIGTERM. Commands stop at
// their next check of the context; a command blocked where it cannot check it (a system call
// inside onnxruntime, a read that waits) would ignore the signal, so a second signal, or the
// grace period after the first, calls exit(130) (os.Exit). stop releases the signals.
func interruptContext(stderr io.Writer, grace time.Duration, exit func(int)) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
		case <-done:
			return
		}
		cancel()
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case s := <-sig:
			fmt.Fprintf(stderr, "error: %v again: exiting now\n", s)
		case <-t.C:
			fmt.Fprintf(stderr, "error: interrupted, and still running %v later: exiting now\n", grace)
		case <-done:
			return
		}
		exit(130)
	}()
	return ctx, func() {
		signal.Stop(sig)
		close(done)
		cancel()
	}
}
