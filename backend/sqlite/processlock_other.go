//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package sqlite

import (
	"errors"
	"os"
)

// Without flock, processes are judged by their heartbeat alone.
const processLocksSupported = false

func tryLock(*os.File) (bool, error) { return false, errors.ErrUnsupported }
