package data

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// ErrNotRegular is wrapped by the errors of files that are not regular files: a FIFO (reading it
// waits for a writer forever), a device (/dev/zero never ends), a socket or a folder. Input files
// (images, manifests, lists) must be regular files; symbolic links to regular files are fine.
var ErrNotRegular = errors.New("not a regular file")

// MaxFileBytes is the largest image file read (256 MiB): the largest image under the default pixel
// cap compresses to far less, and a file is read whole into memory, once per decoding worker.
const MaxFileBytes = 256 << 20

// ErrFileTooLarge is wrapped by the errors of input files over their size limit (MaxFileBytes,
// MaxListBytes), refused before anything is allocated for them.
var ErrFileTooLarge = errors.New("file too large")

// MaxListBytes is the largest manifest or list file read (1 GiB, some 10 million lines).
const MaxListBytes = 1 << 30

// OpenRegular opens path for reading without blocking on a FIFO (O_NONBLOCK where it exists) and
// refuses anything but a regular file of at most limit bytes: errors wrap ErrNotRegular or
// ErrFileTooLarge. Every input file of the project is opened through it.
func OpenRegular(path string, limit int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|nonblock, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		err = checkRegularLimit(path, fi.Mode(), fi.Size(), limit)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// checkRegular refuses anything but a regular file of at most MaxFileBytes.
func checkRegular(path string, mode fs.FileMode, size int64) error {
	return checkRegularLimit(path, mode, size, MaxFileBytes)
}

func checkRegularLimit(path string, mode fs.FileMode, size int64, limit int64) error {
	if !mode.IsRegular() {
		return &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w: %s", ErrNotRegular, kind(mode))}
	}
	if size > limit {
		return &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w: %d bytes, over the limit of %d", ErrFileTooLarge, size, limit)}
	}
	return nil
}

// tooLargeFile is the error of a file that grew past MaxFileBytes while it was read.
func tooLargeFile() error {
	return fmt.Errorf("%w: over the limit of %d bytes", ErrFileTooLarge, int64(MaxFileBytes))
}

// kind names the type of a file that is not regular.
func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "an irregular file"
}

// MaxLineBytes is the longest line of a manifest or list file (1 MiB): a path and a label take far
// less, and the CSV reader would hold a longer line whole in memory (several copies of it).
const MaxLineBytes = 1 << 20

// lineTooLongError is a line over MaxLineBytes.
type lineTooLongError struct{ line int }

func (e *lineTooLongError) Error() string {
	return fmt.Sprintf("line longer than %d bytes", MaxLineBytes)
}

// lineLimiter passes r through and fails at the first line longer than MaxLineBytes, before a
// reader above it buffers that line.
type lineLimiter struct {
	r         io.Reader
	line, run int // 1-based line being read; bytes of it so far
}

func newLineLimiter(r io.Reader) *lineLimiter { return &lineLimiter{r: r, line: 1} }

func (l *lineLimiter) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	for b := p[:n]; ; {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			l.run += len(b)
			break
		}
		if l.run+i > MaxLineBytes {
			l.run += i
			break
		}
		b, l.run = b[i+1:], 0
		l.line++
	}
	if l.run > MaxLineBytes {
		return 0, &lineTooLongError{line: l.line}
	}
	return n, err
}
