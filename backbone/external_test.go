package backbone

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/testenv"
)

// externalTiny writes the tiny CNN to dir/model.onnx with its conv weights in the external file
// loc (written at dir/file when file is not ""), as ONNX's save_as_external_data does.
func externalTiny(t *testing.T, dir, loc, file string) string {
	t.Helper()
	m, err := onnxpb.Load(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	w := onnxpb.Initializers(m.Graph)["conv.w"]
	vals, err := onnxpb.Floats(w)
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	if file != "" {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, file)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, file), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w.FloatData, w.DataLocation = nil, onnx.TensorProto_EXTERNAL
	w.ExternalData = []*onnx.StringStringEntryProto{{Key: "location", Value: loc}}
	p := filepath.Join(dir, "model.onnx")
	if err := onnxpb.SaveAtomic(p, m); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestExternalDataInsideFolder: a backbone whose weights are in a file beside it inspects, cuts
// and runs in onnxruntime with the same features as the self-contained model (the data is
// inlined before onnxruntime sees the model, so onnxruntime never opens a file itself).
func TestExternalDataInsideFolder(t *testing.T) {
	dir := t.TempDir()
	p := externalTiny(t, dir, "weights/conv.bin", "weights/conv.bin")
	info, err := Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	if info.Auto != "pooled" {
		t.Fatalf("auto feature %q", info.Auto)
	}
	ortLib(t)
	ext, err := Open(p, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	inline, err := Open(tinyModel, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer inline.Close()
	const n = 3
	x := randomImages(11, n, 3, 6, 6)
	a, b := make([]float32, n*4), make([]float32, n*4)
	if err := ext.Features(x, n, a); err != nil {
		t.Fatal(err)
	}
	if err := inline.Features(x, n, b); err != nil {
		t.Fatal(err)
	}
	if d := testenv.MaxAbsDiff(a, b); d != 0 {
		t.Errorf("external-data model features differ from the inline model's by %g", d)
	}
}

// TestExternalDataOutsideFolderRefused: Inspect and Open refuse external data that leaves the
// model's folder, naming the tensor and the location, before onnxruntime could read it; so does
// InspectBytes, which has no folder, for any external data.
func TestExternalDataOutsideFolderRefused(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "conv.bin"), make([]byte, 4*4*3*3*3), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, loc := range []string{filepath.Join(outside, "conv.bin"), "../" + filepath.Base(outside) + "/conv.bin", "link.bin"} {
		dir := t.TempDir()
		os.Symlink(filepath.Join(outside, "conv.bin"), filepath.Join(dir, "link.bin"))
		p := externalTiny(t, dir, loc, "")
		_, err := Inspect(p)
		if !errors.Is(err, onnxpb.ErrExternalData) || !strings.Contains(err.Error(), `initializer "conv.w"`) || !strings.Contains(err.Error(), p) {
			t.Errorf("Inspect with location %q: %v", loc, err)
		}
		if os.Getenv("ONNXRUNTIME_SHARED_LIBRARY_PATH") != "" {
			if _, err := Open(p, Options{}); !errors.Is(err, onnxpb.ErrExternalData) {
				t.Errorf("Open with location %q: %v", loc, err)
			}
		}
		raw, _ := os.ReadFile(p)
		if _, err := InspectBytes(raw, "m.onnx"); !errors.Is(err, onnxpb.ErrExternalData) {
			t.Errorf("InspectBytes with location %q: %v", loc, err)
		}
	}
}
