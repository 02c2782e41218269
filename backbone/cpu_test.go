package backbone

import (
	"strings"
	"testing"
)

const epycCPUInfo = `processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 17
model name	: AMD EPYC 9B14
flags		: fpu vme de pse tsc msr pae mce cx8 sse sse2 ssse3 fma avx avx2 avx512f avx512bw avx_vnni avx512_vnni avx512_bf16
bugs		: sysret_ss_attrs null_seg

processor	: 1
model name	: AMD EPYC 9B14
flags		: fpu vme
`

const haswellCPUInfo = `processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz
flags		: fpu vme de pse sse4_1 sse4_2 avx f16c avx2 bmi2 erms
`

const cascadeLakeCPUInfo = `model name	: Intel(R) Xeon(R) Platinum 8280 CPU @ 2.70GHz
flags		: avx avx2 avx512f avx512cd avx512bw avx512_vnni
`

const armCPUInfo = `processor	: 0
BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
`

func TestParseCPUInfo(t *testing.T) {
	cases := []struct {
		name string
		text string
		want CPUInfo
	}{
		{"epyc", epycCPUInfo, CPUInfo{Model: "AMD EPYC 9B14", X86: true, AVX2: true, AVX512VNNI: true, AVXVNNI: true}},
		{"haswell", haswellCPUInfo, CPUInfo{Model: "Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz", X86: true, AVX2: true}},
		{"cascadelake", cascadeLakeCPUInfo, CPUInfo{Model: "Intel(R) Xeon(R) Platinum 8280 CPU @ 2.70GHz", X86: true, AVX2: true, AVX512VNNI: true}},
		{"arm", armCPUInfo, CPUInfo{}},
		{"empty", "", CPUInfo{}},
	}
	for _, tc := range cases {
		if got := ParseCPUInfo(tc.text); got != tc.want {
			t.Errorf("%s: ParseCPUInfo = %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if c := CPU(); c.Model == "" {
		t.Errorf("CPU() = %+v, want a model name", c)
	}
}

func TestInt8Warning(t *testing.T) {
	int8 := &Info{Path: "m.onnx", Quantized: true}
	float := &Info{Path: "f.onnx"}
	haswell := ParseCPUInfo(haswellCPUInfo)
	if w := Int8Warning(int8, haswell); !strings.Contains(w, `"m.onnx"`) || !strings.Contains(w, "AVX2") ||
		!strings.Contains(w, "6 Recall@1") || !strings.Contains(w, "float32 conversion") || !strings.Contains(w, "E5-2680") {
		t.Errorf("int8 model on AVX2 CPU: warning %q", w)
	}
	for name, c := range map[string]CPUInfo{
		"epyc": ParseCPUInfo(epycCPUInfo), "cascadelake": ParseCPUInfo(cascadeLakeCPUInfo), "arm": ParseCPUInfo(armCPUInfo),
	} {
		if w := Int8Warning(int8, c); w != "" {
			t.Errorf("int8 model on %s: unexpected warning %q", name, w)
		}
	}
	if w := Int8Warning(float, haswell); w != "" {
		t.Errorf("float model: unexpected warning %q", w)
	}
}
