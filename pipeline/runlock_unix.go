//go:build unix && !solaris && !aix

package pipeline

import (
	"fmt"
	"syscall"

	"github.com/grouploss/pipeline/pipeline/config"
)

// claimRunFolder takes an exclusive lock on the folder dir for this process, so that two runs
// (or two resumes) never write into one run folder: the second fails with errRunFolderBusy. The
// lock is an flock on the folder itself: nothing is written, and the kernel releases it when the
// process ends, also by kill -9, so an interrupted run never leaves a stale lock behind (a lock
// file created with O_EXCL would). release drops it.
func claimRunFolder(dir string) (release func(), err error) {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("pipeline: run folder: %w", err)
	}
	if err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		syscall.Close(fd)
		if err == syscall.EWOULDBLOCK {
			return nil, withHint(fmt.Errorf("%w: run folder %q is %w", config.ErrInvalid, dir, errRunFolderBusy),
				"wait for the other run to end, or choose another --out folder")
		}
		return nil, fmt.Errorf("pipeline: lock run folder %q: %w", dir, err)
	}
	return func() { syscall.Close(fd) }, nil
}
