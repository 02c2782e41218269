package testenv

import (
	"bytes"
	"math"
	"sync"
)

// MaxAbsDiff returns max |a[i] - b[i]| computed in float64, or +Inf when the lengths differ (so a
// tolerance check fails rather than comparing a prefix).
func MaxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var m float64
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

// SyncBuffer is a bytes.Buffer that several goroutines may write to (a server's log handler)
// while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
