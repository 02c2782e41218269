package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestWriteReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.bin")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteBytes(path, "test file", []byte("new content")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "new content" {
		t.Fatalf("content %q, %v; want %q", b, err, "new content")
	}
	if fi, err := os.Stat(path); err != nil {
		t.Fatal(err)
	} else if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	assertOnly(t, dir, "x.bin")
}

// A failing fill leaves the old file and no temporary file, and the error names what was being
// written, the path and the step, and wraps fill's error.
func TestWriteFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.idx")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk full")
	err := Write(path, "gallery index", func(w io.Writer) error {
		if _, err := w.Write([]byte("partial")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want it to wrap %v", err, boom)
	}
	var ae *Error
	if !errors.As(err, &ae) || ae.Op != "write" || ae.Path != path {
		t.Fatalf("err = %#v, want an *Error with Op write and Path %q", err, path)
	}
	for _, s := range []string{"atomicfile: ", "gallery index", path, "disk full"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %q", err, s)
		}
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("content %q after a failed write, want the old %q", b, "old")
	}
	assertOnly(t, dir, "x.idx")
}

func TestWriteMissingFolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "x.npy")
	err := WriteBytes(path, "embeddings", []byte("x"))
	var ae *Error
	if !errors.As(err, &ae) || ae.Op != "create" || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want a create *Error wrapping fs.ErrNotExist", err)
	}
}

// A large content goes through the buffer in several writes and arrives whole.
func TestWriteLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big")
	want := make([]byte, 3*bufferSize+17)
	for i := range want {
		want[i] = byte(i * 7)
	}
	if err := Write(path, "big file", func(w io.Writer) error {
		for b := want; len(b) > 0; {
			n := min(len(b), 1000)
			if _, err := w.Write(b[:n]); err != nil {
				return err
			}
			b = b[n:]
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != string(want) {
		t.Fatalf("read back %d bytes (err %v), want %d equal bytes", len(got), err, len(want))
	}
}

func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("folder holds %v, want only %v (a temporary file left behind?)", got, names)
	}
}
