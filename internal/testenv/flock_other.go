//go:build !unix || solaris || aix

package testenv

import "os"

// lockFile does nothing where flock(2) does not exist: tests sharing one PostgreSQL server then
// run unserialized.
func lockFile(*os.File) error { return nil }
