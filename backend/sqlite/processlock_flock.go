//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package sqlite

import (
	"errors"
	"os"
	"syscall"
)

const processLocksSupported = true

// tryLock takes an exclusive flock on file without waiting, and reports
// whether it got it. flock, unlike fcntl's locks, belongs to the open file:
// two backends of one process on one database exclude each other too.
func tryLock(file *os.File) (bool, error) {
	err := syscall.Flock(int(file.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return false, nil
	}
	return err == nil, err
}
