package npy

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzRead feeds arbitrary bytes as an .npy file to Read. Properties: no panic and no
// allocation beyond what the file holds (the shape is checked against the file's size first);
// errors name the file; an accepted array has rows*cols values and round-trips through Write
// with the same values. Seeds in testdata/fuzz/FuzzRead.
func FuzzRead(f *testing.F) {
	dir := f.TempDir()
	seed := filepath.Join(dir, "seed.npy")
	if err := Write(seed, []float32{1, 2, 3, 4, 5, 6}, 2, 3); err != nil {
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
		x, rows, cols, err := Read(path)
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
		if err := Write(again, x, rows, cols); err != nil {
			t.Fatal(err)
		}
		y, r2, c2, err := Read(again)
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
