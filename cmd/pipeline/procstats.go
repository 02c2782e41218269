package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// cpuSeconds returns the CPU time (user + system) used so far by every thread of the process,
// onnxruntime's included (0 if the system does not say).
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// loadAverage returns the 1, 5 and 15 minute load averages, or nil.
func loadAverage() []float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	var l [3]float64
	if _, err := fmt.Sscan(string(b), &l[0], &l[1], &l[2]); err != nil {
		return nil
	}
	return l[:]
}
