//go:build !unix

package data

import "os"

// readFile reads the regular file at path (os.ReadFile after the checks of openRegular; buf is not
// reused).
func readFile(path string, _ []byte) ([]byte, error) {
	f, err := openRegular(path, MaxFileBytes)
	if err != nil {
		return nil, err
	}
	f.Close()
	return os.ReadFile(path)
}

// openRegular opens path for reading and refuses anything but a regular file of at most limit bytes.
func openRegular(path string, limit int64) (*os.File, error) {
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
