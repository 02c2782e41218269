package data

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// fakeClock returns a clock advanced by hand.
func fakeClock(p *Progress) *time.Time {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	p.now = func() time.Time { return now }
	p.start = now
	return &now
}

func TestProgressPlain(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, "features", 200)
	now := fakeClock(p)
	for range 200 {
		*now = now.Add(10 * time.Millisecond)
		p.Add(1)
	}
	p.Done()
	p.Add(5) // after Done: ignored
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 10 { // 10%..90%, then the final line
		t.Fatalf("%d lines, want 10:\n%s", len(lines), buf.String())
	}
	if want := "features: 20/200 (10%), 100.0 /s, ETA 2s"; lines[0] != want {
		t.Errorf("first line %q, want %q", lines[0], want)
	}
	if want := "features: 200 done in 2s (100.0 /s)"; lines[9] != want {
		t.Errorf("last line %q, want %q", lines[9], want)
	}
	if strings.Contains(buf.String(), "\r") {
		t.Error("carriage return written to a non-terminal")
	}

	// Big steps print one line per call, not one per crossed tenth.
	buf.Reset()
	p = NewProgress(&buf, "x", 10)
	p.Add(7)
	p.Add(3)
	if got := strings.Count(buf.String(), "\n"); got != 2 {
		t.Errorf("%d lines for two big steps, want 2:\n%s", got, buf.String())
	}
}

func TestProgressTerminalThrottle(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, "decode", 1000)
	p.tty = true // bytes.Buffer is not a terminal; force the redraw mode
	now := fakeClock(p)
	p.lastDraw = *now
	for range 1000 { // 1000 steps over 2 s: at most one redraw per 200 ms
		*now = now.Add(2 * time.Millisecond)
		p.Add(1)
	}
	p.Done()
	out := buf.String()
	if redraws := strings.Count(out, "\r"); redraws < 9 || redraws > 11 {
		t.Errorf("%d redraws in 2 s, want about 10:\n%q", redraws, out)
	}
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "decode: 1000 done in 2s (500.0 /s)\x1b[K\n") {
		t.Errorf("terminal output ends %q", out[max(0, len(out)-80):])
	}
}
