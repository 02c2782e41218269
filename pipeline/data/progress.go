package data

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Progress reports the progress of a counted task on w. On a terminal it redraws one line (count,
// percent, rate, ETA) at most five times a second; elsewhere (logs, pipes) it prints a plain line
// at every further 10% done. It is safe for concurrent use.
type Progress struct {
	mu        sync.Mutex
	w         io.Writer
	label     string
	total     int
	done      int
	tty       bool
	start     time.Time
	lastDraw  time.Time
	nextTenth int // non-terminal: print when done reaches this tenth of total
	finished  bool
	now       func() time.Time
}

// NewProgress starts reporting a task of total units (total <= 0 if unknown) on w.
func NewProgress(w io.Writer, label string, total int) *Progress {
	p := &Progress{w: w, label: label, total: total, now: time.Now, nextTenth: 1}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	p.start = p.now()
	return p
}

// Add records n more units done.
func (p *Progress) Add(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.done += n
	now := p.now()
	if p.tty {
		if now.Sub(p.lastDraw) >= 200*time.Millisecond {
			p.lastDraw = now
			fmt.Fprintf(p.w, "\r%s\x1b[K", p.line(now))
		}
		return
	}
	if p.total <= 0 || p.nextTenth > 9 || p.done*10 < p.nextTenth*p.total {
		return
	}
	for p.nextTenth <= 9 && p.done*10 >= p.nextTenth*p.total {
		p.nextTenth++
	}
	fmt.Fprintln(p.w, p.line(now))
}

// Done prints the final line (count, elapsed time, rate); later calls and Adds do nothing.
func (p *Progress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.finished = true
	now := p.now()
	el := now.Sub(p.start)
	msg := fmt.Sprintf("%s: %d done in %s (%s)", p.label, p.done, el.Round(100*time.Millisecond), rate(p.done, el))
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\x1b[K\n", msg)
		return
	}
	fmt.Fprintln(p.w, msg)
}

func rate(n int, el time.Duration) string {
	if el <= 0 {
		return "- /s"
	}
	return fmt.Sprintf("%.1f /s", float64(n)/el.Seconds())
}

// line is the status text at time now; p.mu is held.
func (p *Progress) line(now time.Time) string {
	el := now.Sub(p.start)
	if p.total <= 0 {
		return fmt.Sprintf("%s: %d, %s", p.label, p.done, rate(p.done, el))
	}
	s := fmt.Sprintf("%s: %d/%d (%.0f%%), %s", p.label, p.done, p.total, 100*float64(p.done)/float64(p.total), rate(p.done, el))
	if p.done > 0 && p.done < p.total {
		eta := time.Duration(float64(el) * float64(p.total-p.done) / float64(p.done))
		s += ", ETA " + eta.Round(time.Second).String()
	}
	return s
}
