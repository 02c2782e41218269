package matmul

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Peak is a machine's theoretical float32 multiply-add rate, the ceiling for ABt's GFLOP/s.
type Peak struct {
	GFLOPS        float64 `json:"gflops"`
	Cores         int     `json:"cores"`
	MHz           float64 `json:"mhz"`             // the clock /proc/cpuinfo reports (turbo may run above it)
	FlopsPerCycle int     `json:"flops_per_cycle"` // per core
	VectorFloats  int     `json:"vector_floats"`   // float32 lanes of the widest vector unit
	How           string  `json:"how"`
}

// MachinePeak reads /proc/cpuinfo: see PeakOf. ok is false where it cannot be read (not Linux).
func MachinePeak() (p Peak, ok bool) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return Peak{}, false
	}
	p = PeakOf(string(b), runtime.NumCPU())
	return p, p.MHz > 0
}

// PeakOf is the peak of `cores` cores described by /proc/cpuinfo text (the first processor's
// entries): cores × clock × float32 lanes (16 with avx512f, 8 with avx2, 4 otherwise) × 2 flops
// per fused multiply-add (when the fma flag is set; a multiply and an add issue separately
// otherwise, same count) × 2 vector pipes (Zen 2-4 and Intel's cores since Haswell issue two
// multiply-adds per cycle; some AVX-512 parts have one 512-bit unit, where this overstates).
func PeakOf(cpuinfo string, cores int) Peak {
	p := Peak{Cores: cores, VectorFloats: 4}
	var flags map[string]bool
	for _, line := range strings.Split(cpuinfo, "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "cpu MHz":
			if p.MHz == 0 {
				p.MHz, _ = strconv.ParseFloat(strings.TrimSpace(value), 64)
			}
		case "flags":
			if flags == nil {
				flags = map[string]bool{}
				for _, f := range strings.Fields(value) {
					flags[f] = true
				}
			}
		}
	}
	switch {
	case flags["avx512f"]:
		p.VectorFloats = 16
	case flags["avx2"]:
		p.VectorFloats = 8
	}
	p.FlopsPerCycle = p.VectorFloats * 2 * 2
	p.GFLOPS = float64(cores) * p.MHz / 1e3 * float64(p.FlopsPerCycle)
	p.How = fmt.Sprintf("%d cores x %.0f MHz x %d float32 lanes x 2 (multiply-add) x 2 vector pipes", cores, p.MHz, p.VectorFloats)
	return p
}
