package backbone

import (
	"fmt"
	"os"
	"runtime"
	"strings"
)

// CPUInfo describes the processor's int8-relevant features.
type CPUInfo struct {
	Model      string // model name, e.g. "AMD EPYC 7B13"
	X86        bool   // an x86 "flags" line was read (the flags below are meaningful)
	AVX2       bool
	AVX512VNNI bool
	AVXVNNI    bool
}

// VNNI reports whether the CPU has a VNNI dot-product instruction set (AVX512-VNNI or AVX-VNNI).
func (c CPUInfo) VNNI() bool { return c.AVX512VNNI || c.AVXVNNI }

// CPU reads /proc/cpuinfo; where it is unreadable, only Model is set (to the architecture).
func CPU() CPUInfo {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return CPUInfo{Model: runtime.GOARCH + " (unknown model)"}
	}
	c := ParseCPUInfo(string(data))
	if c.Model == "" {
		c.Model = runtime.GOARCH + " (unknown model)"
	}
	return c
}

// ParseCPUInfo parses /proc/cpuinfo text; only the first processor's entries are read.
func ParseCPUInfo(text string) CPUInfo {
	var c CPUInfo
	seenModel, seenFlags := false, false
	for _, line := range strings.Split(text, "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch key {
		case "model name", "Model", "cpu model":
			if !seenModel {
				c.Model, seenModel = value, true
			}
		case "flags":
			if seenFlags {
				continue
			}
			seenFlags, c.X86 = true, true
			for _, f := range strings.Fields(value) {
				switch f {
				case "avx2":
					c.AVX2 = true
				case "avx512_vnni":
					c.AVX512VNNI = true
				case "avx_vnni":
					c.AVXVNNI = true
				}
			}
		}
	}
	return c
}

// Dequantize modes of UseFloat: when a quantized model should run as its float conversion.
const (
	DequantizeAuto   = "auto"   // on x86 CPUs without VNNI, where the int8 kernels lose accuracy
	DequantizeAlways = "always" // always (slower on CPUs with VNNI, same accuracy)
	DequantizeNever  = "never"  // never: the int8 kernels, whatever the CPU
)

// UseFloat reports whether a model described by info should run as its float conversion on cpu
// under mode (DequantizeAuto, DequantizeAlways or DequantizeNever; "" is DequantizeAuto).
func UseFloat(mode string, info *Info, cpu CPUInfo) bool {
	if info == nil || !info.Quantized {
		return false
	}
	switch mode {
	case DequantizeAlways:
		return true
	case DequantizeAuto, "":
		return cpu.X86 && !cpu.VNNI()
	}
	return false
}

// MetaReduceRange is the metadata key of a model quantized by the export ("true": 7-bit weights,
// which onnxruntime's u8s8 kernels multiply without saturating on x86 CPUs without VNNI).
const MetaReduceRange = "quantization.reduce_range"

// Int8Warning returns a warning when the model runs int8 (QLinear*) kernels on an x86 CPU
// without VNNI, and "" otherwise.
// A model quantized with 7-bit weights (metadata MetaReduceRange "true") is made for such CPUs and
// gets no warning.
func Int8Warning(info *Info, cpu CPUInfo) string {
	if info == nil || !info.Quantized || !cpu.X86 || cpu.VNNI() || info.Metadata[MetaReduceRange] == "true" {
		return ""
	}
	simd := "no AVX2"
	if cpu.AVX2 {
		simd = "AVX2"
	}
	return fmt.Sprintf("backbone: %q runs int8 (QLinear*) kernels, but this CPU (%s) has %s and no VNNI: "+
		"onnxruntime's u8s8 path saturates int16 sums there, which costs about 6 Recall@1 points; "+
		"a float32 conversion of the backbone is preferable", info.Path, cpu.Model, simd)
}
