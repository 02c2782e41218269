package infer_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDependencies: a program that only embeds images links onnxruntime and the preprocessing,
// not the training stack. `go list -deps` of this package must name neither gorgonia (the
// autodiff engine) nor gonum/plot (the report's plots), and of this module only the
// onnxruntime adapter, the preprocessing and internal helpers.
//
// gorgonia.org/tensor and gonum/mat do appear: the ONNX protobuf types (gonnx's onnx package,
// used by backbone/ort to read the model) import them.
func TestDependencies(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goCmd, "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list -deps needs the go command (%v): run the test with go on PATH", err)
	}
	const module = "github.com/grouploss/pipeline/"
	allowed := []string{module + "backbone/ort", module + "internal/", module + "pipeline/data", module + "pipeline/infer"}
	var deps int
	for _, p := range strings.Fields(string(out)) {
		deps++
		if strings.HasPrefix(p, "gorgonia.org/gorgonia") || strings.HasPrefix(p, "gonum.org/v1/plot") {
			t.Errorf("infer depends on %s", p)
		}
		if strings.HasPrefix(p, module) && !hasAnyPrefix(p, allowed) {
			t.Errorf("infer depends on %s: only onnxruntime (backbone/ort), preprocessing (pipeline/data) and internal helpers belong below it", p)
		}
	}
	if deps < 10 || !strings.Contains(string(out), module+"backbone/ort") {
		t.Fatalf("go list -deps printed %d packages, without backbone/ort:\n%s", deps, out)
	}
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
