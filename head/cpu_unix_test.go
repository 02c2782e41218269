//go:build unix

package head

import (
	"syscall"
	"testing"
	"time"
)

// reportCPU adds a cpu-ms/op metric (user+system time of the process per iteration) to a
// benchmark: on a shared machine it is steadier than wall time.
func reportCPU(b *testing.B) func() {
	t0 := processCPU()
	return func() { b.ReportMetric(float64(processCPU()-t0)/float64(b.N)/1e6, "cpu-ms/op") }
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
