package npy

import (
	"encoding/binary"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// numpyPython returns /usr/bin/python3 if it imports numpy, else "".
func numpyPython(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import numpy").Run(); err != nil {
		return ""
	}
	return py
}

func TestNPYRoundTripAndLayout(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ rows, cols int }{{0, 5}, {1, 1}, {3, 4}, {7, 1280}, {12345, 3}} {
		x := make([]float32, tc.rows*tc.cols)
		for i := range x {
			x[i] = float32(math.Sin(float64(i)*0.37)) * 3
		}
		if len(x) > 2 {
			x[1], x[2] = float32(math.Inf(-1)), -0.0
		}
		p := filepath.Join(dir, "x.npy")
		if err := Write(p, x, tc.rows, tc.cols); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		hdrLen := int(binary.LittleEndian.Uint16(raw[8:]))
		dataStart := 10 + hdrLen
		hdr := string(raw[10:dataStart])
		wantDict := "{'descr': '<f4', 'fortran_order': False, 'shape': (" + strconv.Itoa(tc.rows) + ", " + strconv.Itoa(tc.cols) + "), }"
		if string(raw[:8]) != "\x93NUMPY\x01\x00" || dataStart%64 != 0 || !strings.HasPrefix(hdr, wantDict) ||
			!strings.HasSuffix(hdr, "\n") || strings.TrimLeft(hdr[len(wantDict):], " ") != "\n" ||
			len(raw) != dataStart+4*len(x) {
			t.Errorf("(%d,%d): header %q (data at %d, file %d bytes), want %q padded to 64 bytes", tc.rows, tc.cols, hdr, dataStart, len(raw), wantDict)
		}
		got, r, c, err := Read(p)
		if err != nil {
			t.Fatal(err)
		}
		if r != tc.rows || c != tc.cols || len(got) != len(x) {
			t.Fatalf("read back shape (%d,%d) with %d values, want (%d,%d)", r, c, len(got), tc.rows, tc.cols)
		}
		for i := range x {
			if math.Float32bits(got[i]) != math.Float32bits(x[i]) {
				t.Fatalf("(%d,%d): value %d read back as %v, want %v (bit-exact)", tc.rows, tc.cols, i, got[i], x[i])
			}
		}
	}
	if err := Write(filepath.Join(dir, "bad.npy"), make([]float32, 5), 2, 3); err == nil {
		t.Error("WriteNPY accepted 5 values for shape (2, 3)")
	}
}

func TestReadNPYRejects(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.npy")
	if err := Write(good, []float32{1, 2, 3, 4, 5, 6}, 2, 3); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(good)
	edit := func(old, new string) []byte { return []byte(strings.Replace(string(raw), old, new, 1)) }
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"not npy", []byte("hello world, this is text"), "magic"},
		{"f8", edit("'<f4'", "'<f8'"), `"<f8"`},
		{"big endian", edit("'<f4'", "'>f4'"), `">f4"`},
		{"fortran", edit("False", "True "), "Fortran"},
		{"3-d", edit("(2, 3)", "(1,2,3)"), "3 axes"},
		{"1-d", edit("(2, 3)", "(6,)  "), "1 axes"},
		{"truncated", raw[:len(raw)-3], "data bytes"},
		{"extra bytes", append(append([]byte{}, raw...), 0, 0, 0, 0), "data bytes"},
		{"huge shape", edit("(2, 3)", "(9999999999999, 9999999999999)"), "data bytes"},
		{"version", edit("\x93NUMPY\x01", "\x93NUMPY\x04"), "version 4"},
	} {
		p := filepath.Join(dir, tc.name+".npy")
		if err := os.WriteFile(p, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, _, err := Read(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v, want one naming %q and the file", tc.name, err, tc.want)
		}
	}
	if _, _, _, err := Read(filepath.Join(dir, "missing.npy")); !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("missing file: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

// TestNPYWithNumPy checks the files against numpy itself: numpy.load reads WriteNPY's file with
// the right shape, dtype and values, and ReadNPY reads numpy.save's. Skipped without numpy.
func TestNPYWithNumPy(t *testing.T) {
	py := numpyPython(t)
	if py == "" {
		t.Skip("/usr/bin/python3 with numpy not found (apt-get install python3-numpy): skipping the numpy cross-check")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "go.npy")
	x := []float32{0.5, -1.25, 3, 1e-7, 65504, -0.0}
	if err := Write(p, x, 3, 2); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, "-c", `import sys, numpy
a = numpy.load(sys.argv[1])
print(a.shape, a.dtype, a.flags['C_CONTIGUOUS'], repr(a[1, 0]), repr(a[2, 0]), a.tolist() == numpy.array(`+
		`[[0.5, -1.25], [3, 1e-7], [65504, -0.0]], dtype='<f4').tolist())`, p).CombinedOutput()
	if err != nil {
		t.Fatalf("numpy.load: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "(3, 2) float32 True 3.0 65504.0 True"; got != want {
		t.Errorf("numpy sees %q, want %q", got, want)
	}

	q := filepath.Join(dir, "numpy.npy")
	if out, err := exec.Command(py, "-c", `import sys, numpy
numpy.save(sys.argv[1], (numpy.arange(12, dtype='<f4').reshape(4, 3) - 5) / 4)`, q).CombinedOutput(); err != nil {
		t.Fatalf("numpy.save: %v\n%s", err, out)
	}
	got, r, c, err := Read(q)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, 12)
	for i := range want {
		want[i] = (float32(i) - 5) / 4
	}
	if r != 4 || c != 3 || !slices.Equal(got, want) {
		t.Errorf("numpy.save file read as (%d,%d) %v, want (4,3) %v", r, c, got, want)
	}
}
