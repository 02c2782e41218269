package cputime

import (
	"runtime"
	"testing"
	"time"
)

// Spinning for 200 ms of wall time uses CPU time the counter sees (on Unix; elsewhere it is 0).
func TestSecondsAdvances(t *testing.T) {
	t0 := Seconds()
	x := 1.0
	for start := time.Now(); time.Since(start) < 200*time.Millisecond; {
		for range 1000 {
			x = x*1.0000001 + 1e-9
		}
	}
	used := Seconds() - t0
	switch runtime.GOOS {
	case "windows", "plan9", "js", "wasip1":
		if used != 0 {
			t.Errorf("Seconds moved by %v on %s, which has no getrusage", used, runtime.GOOS)
		}
	default:
		// A loaded machine may give this goroutine little of the 200 ms, but not none.
		if used <= 0.01 || used > 60 {
			t.Errorf("spinning 200 ms used %v s of CPU time (x=%v)", used, x)
		}
	}
}
