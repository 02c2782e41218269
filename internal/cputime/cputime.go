// Package cputime reads the CPU time the process has used, where the system says it: on Unix
// from getrusage(2); elsewhere it reports nothing, so that callers (benchmarks that print CPU
// milliseconds per step) build on every OS Go supports.
package cputime

// Seconds returns the CPU time (user + system) used so far by every thread of the process,
// cgo libraries such as onnxruntime included, or 0 when the system does not say.
func Seconds() float64 { return seconds() }
