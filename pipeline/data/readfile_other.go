//go:build !unix

package data

import "os"

// readFile reads the regular file at path (os.ReadFile after the checks of OpenRegular; buf is not
// reused).
func readFile(path string, _ []byte) ([]byte, error) {
	f, err := OpenRegular(path, MaxFileBytes)
	if err != nil {
		return nil, err
	}
	f.Close()
	return os.ReadFile(path)
}

// OpenRegular opens path for reading and refuses anything but a regular file of at most limit bytes.
func OpenRegular(path string, limit int64) (*os.File, error) {
	f, err := os.Open(path)
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
