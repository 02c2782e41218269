//go:build !unix || solaris || aix

package pipeline

// claimRunFolder does not lock on systems without flock.
func claimRunFolder(dir string) (release func(), err error) { return func() {}, nil }
