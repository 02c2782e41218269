package pipeline

import "syscall"

// memoryBudget is the most memory one of a run's large arrays may take: half of the machine's
// physical memory (at least 1 GiB).
func memoryBudget() int64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil || si.Totalram == 0 {
		return 8 << 30
	}
	return max(int64(si.Totalram)*int64(si.Unit)/2, 1<<30)
}
