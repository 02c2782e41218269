// Package f32le streams float32 values to and from their little-endian bytes through a bounded
// buffer, so that writing or reading a large matrix never holds a second copy of it as bytes.
package f32le

import (
	"encoding/binary"
	"io"
	"math"
)

// chunk is the largest buffer Write and Read allocate.
const chunk = 1 << 20

// Write writes x to w as little-endian float32 values.
func Write(w io.Writer, x []float32) error {
	buf := make([]byte, min(chunk, 4*len(x)))
	for len(x) > 0 {
		c := min(len(buf)/4, len(x))
		for i, v := range x[:c] {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
		if _, err := w.Write(buf[:4*c]); err != nil {
			return err
		}
		x = x[c:]
	}
	return nil
}

// Read fills x with little-endian float32 values read from r; a short input is
// io.ErrUnexpectedEOF (io.EOF when r is empty).
func Read(r io.Reader, x []float32) error {
	buf := make([]byte, min(chunk, 4*len(x)))
	for len(x) > 0 {
		c := min(len(buf)/4, len(x))
		if _, err := io.ReadFull(r, buf[:4*c]); err != nil {
			return err
		}
		for i := range x[:c] {
			x[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
		}
		x = x[c:]
	}
	return nil
}
