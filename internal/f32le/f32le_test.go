package f32le

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"testing"
)

// Round trip across several buffer chunks, special values included, and the byte layout
// matches encoding/binary's.
func TestRoundTrip(t *testing.T) {
	x := make([]float32, chunk/4*2+3)
	for i := range x {
		x[i] = float32(i)*0.37 - 1000
	}
	x[0], x[1], x[2] = float32(math.Inf(-1)), float32(math.NaN()), -0
	var b bytes.Buffer
	if err := Write(&b, x); err != nil {
		t.Fatal(err)
	}
	want, err := binary.Append(nil, binary.LittleEndian, x)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatal("bytes differ from encoding/binary's little-endian layout")
	}
	y := make([]float32, len(x))
	if err := Read(bytes.NewReader(want), y); err != nil {
		t.Fatal(err)
	}
	for i := range x {
		if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
			t.Fatalf("value %d: read %v, wrote %v", i, y[i], x[i])
		}
	}
}

func TestReadShort(t *testing.T) {
	err := Read(bytes.NewReader(make([]byte, 10)), make([]float32, 3))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
}
