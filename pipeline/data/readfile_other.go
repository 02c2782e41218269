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

// nonblock is 0 where O_NONBLOCK does not exist.
const nonblock = 0
