package main

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/pipeline"
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

// thisMachine describes the CPU, its cores and Go, and onnxruntime's version when this process
// has loaded it ("" otherwise: bench-memory's commands load it in child processes).
func thisMachine() pipeline.Machine {
	cpu := backbone.CPU()
	return pipeline.Machine{CPU: cpu.Model, AVX2: cpu.AVX2, AVX512VNNI: cpu.AVX512VNNI, AVXVNNI: cpu.AVXVNNI,
		Cores: runtime.NumCPU(), OnnxRuntime: backbone.RuntimeVersion(), GoVersion: runtime.Version()}
}
