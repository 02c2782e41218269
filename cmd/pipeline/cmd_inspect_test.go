package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/backbone"
)

func TestInspectTable(t *testing.T) {
	r := toolRun("inspect", toolTinyCNN)
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	info, err := backbone.Inspect(toolTinyCNN)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"model        " + toolTinyCNN,
		"sha256 " + info.SHA256,
		"producer     grouploss-testdata-gen 1",
		"ir / opsets  7 / ai.onnx 12",
		"inputs       pixels float32 [1,3,6,6]",
		"outputs      logits float32 [1,3]",
		"metadata     purpose = backbone tests",
		"nodes        5, int8: no",
		"Conv 1, Flatten 1, Gemm 1, GlobalAveragePool 1, Relu 1",
		"cpu          ",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	// One line per candidate, the automatic one starred, with shape and dim.
	var starred []string
	for _, c := range info.Features {
		found := false
		for _, line := range strings.Split(r.stdout, "\n") {
			f := strings.Fields(line)
			if len(f) > 1 && f[0] == "*" && f[1] == c.Tensor {
				starred, found = append(starred, c.Tensor), true
			} else if len(f) > 0 && f[0] == c.Tensor {
				found = true
			}
			if found && !strings.Contains(line, " 4 ") {
				t.Errorf("candidate line %q lacks the dim 4", line)
			}
			if found {
				break
			}
		}
		if !found {
			t.Errorf("candidate %q not listed:\n%s", c.Tensor, r.stdout)
		}
	}
	if len(info.Features) < 2 || len(starred) != 1 || starred[0] != info.Auto {
		t.Errorf("starred %v, want exactly the automatic %q among %d candidates", starred, info.Auto, len(info.Features))
	}
	if strings.Contains(r.stdout, "warning") {
		t.Errorf("float32 model got a warning:\n%s", r.stdout)
	}
}

func TestInspectJSON(t *testing.T) {
	for _, args := range [][]string{{"inspect", toolTinyCNN, "--json"}, {"inspect", "--json", toolTinyCNN}} {
		r := toolRun(args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d, stderr:\n%s", args, r.code, r.stderr)
		}
		var got struct {
			backbone.Info
			CPU         *backbone.CPUInfo
			Int8Warning string
		}
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, r.stdout)
		}
		want, _ := backbone.Inspect(toolTinyCNN)
		if got.Path != want.Path || got.SHA256 != want.SHA256 || got.Nodes != 5 || got.Ops["Conv"] != 1 ||
			got.Auto != want.Auto || len(got.Features) != len(want.Features) || got.Inputs[0].Name != "pixels" ||
			got.Opsets[""] != 12 || got.CPU == nil || got.CPU.Model == "" {
			t.Errorf("%v: JSON %+v, want backbone.Inspect's %+v plus the CPU", args, got, want)
		}
	}
}

// TestInspectExported: an exported model shows its I/O and preprocessing metadata.
func TestInspectExported(t *testing.T) {
	model := toolModel(t)
	r := toolRun("inspect", model)
	for _, want := range []string{"images float32 [batch,3,6,6]", "embeddings float32 [batch,3]",
		"preprocess.size = 6x6", "embedding_dim = 3", "LpNormalization 1"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
}

// TestInspectInt8Warning: an int8 model on an x86 CPU without VNNI is warned about, on one with
// VNNI it is not.
func TestInspectInt8Warning(t *testing.T) {
	model := filepath.Join(sharedDir(t), "models", "mobilenetv2-12-int8.onnx")
	noVNNI := backbone.CPUInfo{Model: "Old Xeon", X86: true, AVX2: true}
	rep, err := runInspect(model, noVNNI)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	printInspect(&b, rep)
	out := b.String()
	for _, want := range []string{"int8: yes", "cpu          Old Xeon (AVX2 yes, VNNI no)", "*  464_quantized", "[?,1280,1,1]  1280",
		"scale 464_scale, zero point 464_zero_point", "\nwarning: backbone:", "no VNNI"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	rep, err = runInspect(model, backbone.CPUInfo{Model: "New EPYC", X86: true, AVX2: true, AVX512VNNI: true})
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	printInspect(&b, rep)
	if strings.Contains(b.String(), "warning") {
		t.Errorf("warning with VNNI:\n%s", b.String())
	}
}

func TestInspectErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.onnx")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"inspect"}, 2, "one MODEL.onnx argument, got 0"},
		{[]string{"inspect", "a.onnx", "b.onnx"}, 2, "got 2"},
		{[]string{"inspect", "--bogus", toolTinyCNN}, 2, "bogus"},
		{[]string{"inspect", missing}, 1, "nope.onnx"},
	} {
		r := toolRun(tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want exit %d naming %q", tc.args, r.code, r.stderr, r.stdout, tc.code, tc.want)
		}
	}
}
