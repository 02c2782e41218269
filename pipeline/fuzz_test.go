package pipeline

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParseConfig feeds arbitrary YAML to the config parser. Properties: no panic (also in
// Validate); an error wraps ErrConfig and names the file; an accepted config round-trips: written
// back as YAML (as config.yaml in a run folder is) and parsed again it is the same config.
// Seeds in testdata/fuzz/FuzzParseConfig: configs/cub100.yaml and small valid and broken configs.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("seed: 3\noptimizer:\n  epochs: 2\n  lr_steps: [1]\n"))
	const name = "fuzz.yaml"
	f.Fuzz(func(t *testing.T, in []byte) {
		cfg, err := ParseConfig(in, name)
		if err != nil {
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), strconv.Quote(name)) {
				t.Fatalf("error %v does not wrap ErrConfig or name the file", err)
			}
			return
		}
		_ = cfg.Validate()
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("accepted config does not marshal: %v", err)
		}
		again, err := ParseConfig(out, name)
		if err != nil {
			t.Fatalf("written config refused: %v\n%s", err, out)
		}
		out2, _ := yaml.Marshal(again)
		if !bytes.Equal(out, out2) { // compared as YAML: NaN != NaN for ==
			t.Fatalf("round trip changed the config:\n%s\n---\n%s", out, out2)
		}
	})
}

// FuzzReadNPY feeds arbitrary bytes as an .npy file to ReadNPY. Properties: no panic and no
// allocation beyond what the file holds (the shape is checked against the file's size first);
// errors name the file; an accepted array has rows*cols values and round-trips through WriteNPY
// with the same values. Seeds in testdata/fuzz/FuzzReadNPY.
func FuzzReadNPY(f *testing.F) {
	dir := f.TempDir()
	seed := filepath.Join(dir, "seed.npy")
	if err := WriteNPY(seed, []float32{1, 2, 3, 4, 5, 6}, 2, 3); err != nil {
		f.Fatal(err)
	}
	b, _ := os.ReadFile(seed)
	f.Add(b)
	f.Add(b[:20])
	f.Add([]byte("\x93NUMPY\x01\x00\x46\x00{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999), }\n"))
	f.Add([]byte("\x93NUMPY\x03\x00\xff\xff\xff\x7f{'descr': '<f4'}"))
	f.Fuzz(func(t *testing.T, in []byte) {
		path := filepath.Join(t.TempDir(), "x.npy")
		if err := os.WriteFile(path, in, 0o644); err != nil {
			t.Fatal(err)
		}
		x, rows, cols, err := ReadNPY(path)
		if err != nil {
			if !strings.Contains(err.Error(), "npy") {
				t.Fatalf("error %v does not say npy", err)
			}
			return
		}
		if rows < 0 || cols < 0 || len(x) != rows*cols || 4*len(x) > len(in) {
			t.Fatalf("accepted shape (%d, %d) with %d values from %d bytes", rows, cols, len(x), len(in))
		}
		again := filepath.Join(t.TempDir(), "y.npy")
		if err := WriteNPY(again, x, rows, cols); err != nil {
			t.Fatal(err)
		}
		y, r2, c2, err := ReadNPY(again)
		if err != nil || r2 != rows || c2 != cols {
			t.Fatalf("round trip: (%d, %d) %v", r2, c2, err)
		}
		for i := range x {
			if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
				t.Fatalf("value %d: %v then %v", i, x[i], y[i])
			}
		}
	})
}
