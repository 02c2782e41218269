//go:build !unix

package data

import "os"

// readFile reads the file at path (os.ReadFile; buf is not reused).
func readFile(path string, _ []byte) ([]byte, error) { return os.ReadFile(path) }
