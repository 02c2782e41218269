//go:build !linux

package pipeline

// memoryBudget is the most memory one of a run's large arrays may take: 8 GiB where the
// machine's memory is not read.
func memoryBudget() int64 { return 8 << 30 }
