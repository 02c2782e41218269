package npy

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/grouploss/pipeline/internal/atomicfile"
	"github.com/grouploss/pipeline/internal/f32le"
	"github.com/grouploss/pipeline/pipeline/data"
)

// npyMagic starts every NumPy .npy file; the format version follows it.
const npyMagic = "\x93NUMPY"

// WriteNPY writes the (rows, cols) row-major float32 matrix x (len rows*cols) to path as a NumPy
// .npy file, format version 1.0: dtype '<f4' (little-endian float32), C order, shape (rows, cols),
// header padded so that the data starts at a multiple of 64 bytes. numpy.load reads it. The file is
// written atomically (temporary file in the same folder, fsync, rename).
func Write(path string, x []float32, rows, cols int) error {
	if rows < 0 || cols < 0 || len(x) != rows*cols {
		return fmt.Errorf("npy: %q: %d values for shape (%d, %d)", path, len(x), rows, cols)
	}
	dict := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", rows, cols)
	// magic (6) + version (2) + header length (2) + dict + padding + '\n' is a multiple of 64.
	pre := len(npyMagic) + 4
	total := (pre + len(dict) + 1 + 63) / 64 * 64
	hdrLen := total - pre
	if hdrLen > math.MaxUint16 {
		return fmt.Errorf("npy: %q: header of %d bytes does not fit format 1.0", path, hdrLen)
	}
	hdr := make([]byte, total)
	copy(hdr, npyMagic)
	hdr[6], hdr[7] = 1, 0
	binary.LittleEndian.PutUint16(hdr[8:], uint16(hdrLen))
	h := hdr[pre:total]
	copy(h, dict)
	for i := len(dict); i < len(h)-1; i++ {
		h[i] = ' '
	}
	h[len(h)-1] = '\n'
	// The values are streamed through a small buffer: no second copy of x.
	err := atomicfile.Write(path, "npy array", func(w io.Writer) error {
		if _, err := w.Write(hdr); err != nil {
			return err
		}
		return f32le.Write(w, x)
	})
	if err != nil {
		return fmt.Errorf("npy: %w", err)
	}
	return nil
}

var (
	reNPYDescr   = regexp.MustCompile(`'descr'\s*:\s*'([^']*)'`)
	reNPYFortran = regexp.MustCompile(`'fortran_order'\s*:\s*(True|False)`)
	reNPYShape   = regexp.MustCompile(`'shape'\s*:\s*\(([^)]*)\)`)
)

// ReadNPY reads a 2-D float32 NumPy .npy file (format 1.x, 2.x or 3.x, dtype '<f4', C order) and
// returns its (rows, cols) row-major values. Other dtypes, Fortran order, other ranks and files
// whose size does not match the header are errors naming the file.
func Read(path string) (x []float32, rows, cols int, err error) {
	f, err := data.OpenRegular(path, 1<<62)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("npy: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("npy: %w", err)
	}
	size := fi.Size()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("npy: %q: %s", path, fmt.Sprintf(format, args...))
	}
	// Only the header is read whole; the values are read through a small buffer into x.
	var pre [12]byte
	k, _ := io.ReadFull(f, pre[:])
	b := pre[:k]
	if len(b) < 10 || string(b[:6]) != npyMagic {
		return nil, 0, 0, bad("not a NumPy .npy file (no \\x93NUMPY magic)")
	}
	var start, hdrLen int64
	switch b[6] {
	case 1:
		start, hdrLen = 10, int64(binary.LittleEndian.Uint16(b[8:]))
	case 2, 3:
		if len(b) < 12 {
			return nil, 0, 0, bad("truncated header")
		}
		start, hdrLen = 12, int64(binary.LittleEndian.Uint32(b[8:]))
	default:
		return nil, 0, 0, bad("format version %d.%d, want 1.x, 2.x or 3.x", b[6], b[7])
	}
	if hdrLen > size-start {
		return nil, 0, 0, bad("header of %d bytes but the file has %d", hdrLen, size)
	}
	hb := make([]byte, hdrLen)
	if _, err := f.ReadAt(hb, start); err != nil {
		return nil, 0, 0, bad("reading the header: %v", err)
	}
	hdr := string(hb)
	m := reNPYDescr.FindStringSubmatch(hdr)
	if m == nil {
		return nil, 0, 0, bad("header %q has no descr", strings.TrimSpace(hdr))
	}
	if m[1] != "<f4" {
		return nil, 0, 0, bad("dtype %q, want '<f4' (little-endian float32; use numpy's astype('<f4'))", m[1])
	}
	if m := reNPYFortran.FindStringSubmatch(hdr); m == nil || m[1] != "False" {
		return nil, 0, 0, bad("Fortran order or no fortran_order in the header, want C order (numpy.ascontiguousarray)")
	}
	m = reNPYShape.FindStringSubmatch(hdr)
	if m == nil {
		return nil, 0, 0, bad("header %q has no shape", strings.TrimSpace(hdr))
	}
	var dims []int
	for _, f := range strings.Split(m[1], ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v < 0 {
			return nil, 0, 0, bad("bad shape (%s)", m[1])
		}
		dims = append(dims, v)
	}
	if len(dims) != 2 {
		return nil, 0, 0, bad("shape (%s) has %d axes, want 2 (rows, dim)", m[1], len(dims))
	}
	rows, cols = dims[0], dims[1]
	payload := size - start - hdrLen
	if rows > 0 && int64(cols) > payload/4/int64(rows) || payload != 4*int64(rows)*int64(cols) {
		return nil, 0, 0, bad("%d data bytes, want %d for shape (%d, %d) float32", payload, 4*rows*cols, rows, cols)
	}
	x = make([]float32, rows*cols)
	if err := f32le.Read(io.NewSectionReader(f, start+hdrLen, payload), x); err != nil {
		return nil, 0, 0, bad("reading the data: %v", err)
	}
	return x, rows, cols, nil
}
