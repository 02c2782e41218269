package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/backbone"
)

// TestDoctorHealthy: with `make test`'s onnxruntime and ../shared every check passes (the CPU
// may only warn) and the exit code is 0.
func TestDoctorHealthy(t *testing.T) {
	needORT(t)
	shared := sharedDir(t)
	t.Setenv("PIPELINE_SHARED_DIR", shared)
	r := toolRun("doctor")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	names := []string{"onnxruntime library:", "onnxruntime loads: version 1.30.0", "shared data:", "default backbone:", "cpu:",
		"jpeg decoder: libjpeg-turbo-", "go: built with go"}
	if len(lines) != len(names) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(names), r.stdout)
	}
	for i, l := range lines {
		if !strings.Contains(l, names[i]) || !(strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "warn ") && strings.Contains(l, "cpu:")) {
			t.Errorf("line %d %q: want ok (warn only for the cpu) and %q", i, l, names[i])
		}
	}
	for _, want := range []string{os.Getenv("ONNXRUNTIME_SHARED_LIBRARY_PATH"), "($ONNXRUNTIME_SHARED_LIBRARY_PATH)",
		"data/cub100 lists 5902 images", "sha256 matches SHA256SUMS"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}

	r = toolRun("doctor", "--json")
	var checks []doctorCheck
	if err := json.Unmarshal([]byte(r.stdout), &checks); err != nil || r.code != 0 || len(checks) != len(names) {
		t.Errorf("--json: exit %d, %d checks, %v:\n%s", r.code, len(checks), err, r.stdout)
	}
}

// TestDoctorProblems: a missing library, shared data without the dataset and a backbone whose
// checksum does not match are three problems, each on one line with one fix; exit code 1.
func TestDoctorProblems(t *testing.T) {
	dir := t.TempDir()
	shared := filepath.Join(dir, "shared")
	if err := os.MkdirAll(filepath.Join(shared, "models"), 0o755); err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(shared, "models", "mobilenetv2-12-int8.onnx")
	if err := os.WriteFile(model, []byte("truncated download"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := "83530ad811bc31d2b60a5599a21265a5057608c9b044b4ee758cc22f2309f54f"
	if err := os.WriteFile(filepath.Join(shared, "models", "SHA256SUMS"), []byte(want+"  mobilenetv2-12-int8.onnx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(dir, "libonnxruntime.so.1")
	t.Setenv("ONNXRUNTIME_SHARED_LIBRARY_PATH", lib)
	t.Setenv("PIPELINE_SHARED_DIR", shared)

	r := toolRun("doctor")
	if r.code != 1 || !strings.Contains(r.stderr, "doctor: problems found: 3 of 6 checks failed") {
		t.Fatalf("exit %d, stderr %q; want 1 and 3 of 6 failed\n%s", r.code, r.stderr, r.stdout)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	for _, tc := range []struct{ prefix, detail, fix string }{
		{"problem onnxruntime library:", lib + " ($ONNXRUNTIME_SHARED_LIBRARY_PATH) does not exist", "point ONNXRUNTIME_SHARED_LIBRARY_PATH at"},
		{"problem shared data:", "has no data/cub100/manifest.csv", "set PIPELINE_SHARED_DIR"},
		{"problem default backbone:", "but SHA256SUMS says " + want, "restore mobilenetv2-12-int8.onnx"},
	} {
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, tc.prefix) {
				found = true
				if !strings.Contains(l, tc.detail) || strings.Count(l, "fix:") != 1 || !strings.Contains(l, "fix: "+tc.fix) {
					t.Errorf("line %q: want %q and one fix %q", l, tc.detail, tc.fix)
				}
			}
		}
		if !found {
			t.Errorf("no line %q in:\n%s", tc.prefix, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "onnxruntime loads") {
		t.Errorf("the load check ran without a library:\n%s", r.stdout)
	}

	// Without SHA256SUMS the backbone cannot be verified: a warning, not a problem.
	os.Remove(filepath.Join(shared, "models", "SHA256SUMS"))
	if c := doctorBackbone(model); c.Status != statusWarn || !strings.Contains(c.Detail, "cannot be verified") {
		t.Errorf("no SHA256SUMS: %+v, want a warning", c)
	}
	if c := doctorBackbone(filepath.Join(dir, "none.onnx")); c.Status != statusProblem || c.Fix == "" {
		t.Errorf("missing backbone: %+v, want a problem with a fix", c)
	}
	if r := toolRun("doctor", "extra"); r.code != 2 {
		t.Errorf("doctor extra: exit %d, want 2", r.code)
	}
}

func TestDoctorCPU(t *testing.T) {
	for _, tc := range []struct {
		cpu    backbone.CPUInfo
		status string
		want   string
	}{
		{backbone.CPUInfo{Model: "EPYC", X86: true, AVX2: true, AVXVNNI: true}, statusOK, "EPYC (AVX2 yes, VNNI yes)"},
		{backbone.CPUInfo{Model: "Xeon", X86: true, AVX2: true}, statusWarn, "Xeon (AVX2 yes, VNNI no): int8"},
		{backbone.CPUInfo{Model: "Atom", X86: true}, statusWarn, "Atom (AVX2 no, VNNI no): onnxruntime falls back"},
		{backbone.CPUInfo{Model: "arm64"}, statusOK, "arm64 (not x86"},
	} {
		c := doctorCPU(tc.cpu)
		if c.Status != tc.status || !strings.Contains(c.Detail, tc.want) || (c.Status == statusWarn) != (c.Fix != "") {
			t.Errorf("%+v: %+v, want %s with %q (and a fix when warning)", tc.cpu, c, tc.status, tc.want)
		}
	}
}

func TestSHA256Entry(t *testing.T) {
	p := filepath.Join(t.TempDir(), "SHA256SUMS")
	os.WriteFile(p, []byte("AAAA  other.onnx\nBBBB *model.onnx\n\n"), 0o644)
	if got, err := sha256Entry(p, "model.onnx"); err != nil || got != "bbbb" {
		t.Errorf("binary-mode entry: %q, %v; want bbbb", got, err)
	}
	if _, err := sha256Entry(p, "absent.onnx"); err == nil || !strings.Contains(err.Error(), "absent.onnx") {
		t.Errorf("absent entry: %v", err)
	}
}

// TestDoctorJPEG: libjpeg-turbo is ok; Go's fallback decoder is a warning with the fix.
func TestDoctorJPEG(t *testing.T) {
	if c := doctorJPEG("libjpeg-turbo-2001005"); c.Status != statusOK || c.Fix != "" {
		t.Errorf("libjpeg-turbo: %+v", c)
	}
	if c := doctorJPEG("go"); c.Status != statusWarn || !strings.Contains(c.Fix, "libjpeg62-turbo-dev") {
		t.Errorf("go: %+v", c)
	}
}
