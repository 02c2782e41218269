// Package atomicfile writes files so that a reader sees either the old content or the new one,
// never a torn file: the content goes to a temporary file in the target's folder, which is
// synced and renamed over the target, then the folder is synced so that the rename survives a
// crash.
package atomicfile

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// bufferSize is the write buffer between fill and the temporary file.
const bufferSize = 1 << 20

// Error is a failed atomic write. What says what was being written ("gallery index"), Op the
// step that failed (create, write, sync, close, rename); the target Path is left as it was.
type Error struct {
	What string
	Path string
	Op   string
	Err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("atomicfile: %s %s %q: %v", e.Op, e.What, e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Write writes path with what fill writes, through a buffered temporary file in the same folder
// that is synced, made 0644 and renamed over path; the folder is then synced (best effort: not
// every system can sync a folder). what names the content in errors. On any error, fill's
// included, the temporary file is removed, path is left as it was and the error is an *Error.
func Write(path, what string, fill func(w io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return &Error{What: what, Path: path, Op: "create", Err: err}
	}
	op := "write"
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = &Error{What: what, Path: path, Op: op, Err: err}
		}
	}()
	bw := bufio.NewWriterSize(tmp, bufferSize)
	if err = fill(bw); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	if err = tmp.Chmod(0o644); err != nil {
		return err
	}
	op = "sync"
	if err = tmp.Sync(); err != nil {
		return err
	}
	op = "close"
	if err = tmp.Close(); err != nil {
		return err
	}
	op = "rename"
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	SyncDir(filepath.Dir(path))
	return nil
}

// WriteBytes is Write with the content b.
func WriteBytes(path, what string, b []byte) error {
	return Write(path, what, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// SyncDir makes renames in dir durable, closing the folder it opens. It is best effort: some
// systems (Windows) cannot open a folder for syncing, and a renamed file's content is already
// synced.
func SyncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	d.Sync()
	d.Close()
}
