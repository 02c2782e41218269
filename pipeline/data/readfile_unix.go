//go:build unix

package data

import (
	"io/fs"
	"syscall"
)

// readFile reads the regular file at path into buf (grown as needed) and returns its contents. It
// makes four system calls (open, fstat, read, close) and no allocation for a file that fits buf,
// where os.ReadFile makes six or more and allocates: 10 instead of 43 microseconds per CUB image on
// the project's machine kind, where system calls are slow. The file is opened without blocking (a
// FIFO would wait for a writer forever) and refused unless it is a regular file of at most
// MaxFileBytes, before anything is allocated for it. Errors are *fs.PathError, as os.ReadFile's;
// they wrap ErrNotRegular or ErrFileTooLarge for the refusals.
func readFile(path string, buf []byte) ([]byte, error) {
	var fd int
	var err error
	for {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return buf[:0], &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return buf[:0], &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	// st.Mode is uint32 on Linux, uint16 on darwin and the BSDs.
	if err := checkRegular(path, unixMode(uint32(st.Mode)), st.Size); err != nil {
		return buf[:0], err
	}
	// One byte more than the size, so a file that grew is noticed and read to its end (up to the cap).
	want := int(st.Size) + 1
	if cap(buf) < want {
		buf = make([]byte, want+want/4)
	}
	buf = buf[:cap(buf)]
	n := 0
	for {
		if n == len(buf) {
			if n > MaxFileBytes {
				return buf[:0], &fs.PathError{Op: "read", Path: path, Err: tooLargeFile()}
			}
			buf = append(buf, make([]byte, len(buf))...) // doubles the length: cap may exceed it
			buf = buf[:cap(buf)]
		}
		m, err := syscall.Read(fd, buf[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return buf[:0], &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			return buf[:n], nil
		}
		n += m
	}
}

// unixMode turns a stat mode into the fs.FileMode type bits checkRegular looks at.
func unixMode(m uint32) fs.FileMode {
	switch m & syscall.S_IFMT {
	case syscall.S_IFREG:
		return 0
	case syscall.S_IFDIR:
		return fs.ModeDir
	case syscall.S_IFIFO:
		return fs.ModeNamedPipe
	case syscall.S_IFSOCK:
		return fs.ModeSocket
	case syscall.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFBLK:
		return fs.ModeDevice
	}
	return fs.ModeIrregular
}

// nonblock is added to the flags of OpenRegular: a FIFO opened for reading would block until a
// writer opens it; O_NONBLOCK does not change reads of a regular file.
const nonblock = syscall.O_NONBLOCK
