package sqlite

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// A process executing operations on the file holds an OS lock (flock) on a
// file of its own, named by its process ID, in a directory beside the
// database, from Start to Stop. The kernel releases the lock the moment the
// process dies, however it dies, so that a process that finds a lock free
// knows at once that its holder is gone, and runs its operations again: a
// restarted gateway at its start, a process beside it at its next sweep,
// instead of after the heartbeat's silence. A process whose lock cannot be
// tested (its file is missing: it runs elsewhere, or predates the locks) is
// judged by its heartbeat alone.
//
// A lock file outlives its process only until another finds it free: a
// process deletes its own as it stops, and the one that finds a dead
// process's lock free deletes it once it has rescheduled its operations.
//
// Locks are visible only on one machine: processes on other machines that
// share the file over a network file system are not supported, as SQLite
// itself does not support them.

// processLockDir is the directory of the lock files of the processes
// executing operations on the database at path.
func processLockDir(path string) string { return path + "-processes" }

// processLock is a held lock on a process's lock file.
type processLock struct {
	file *os.File
	path string
}

// lockProcess creates the lock file of process id and locks it. The file
// is locked under a temporary name, then renamed into place, so that no
// other process ever finds it free while its owner lives.
func lockProcess(dbPath, id string) (*processLock, error) {
	if !processLocksSupported {
		return nil, nil
	}
	dir := processLockDir(dbPath)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the directory of process locks: %w", err)
	}
	path := filepath.Join(dir, id)
	temporary := filepath.Join(dir, "."+id)
	file, err := os.OpenFile(temporary, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating the process lock: %w", err)
	}
	locked, err := tryLock(file)
	if err == nil && !locked {
		err = errors.New("held by another")
	}
	if err == nil {
		err = os.Rename(temporary, path)
	}
	if err != nil {
		file.Close()
		os.Remove(temporary)
		return nil, fmt.Errorf("locking the process lock: %w", err)
	}
	return &processLock{file: file, path: path}, nil
}

// release deletes the lock file and releases the lock. It is deleted
// first, so that a process that finds the lock free afterwards, having
// opened the file before, finds a process that has stopped.
func (l *processLock) release() {
	if l == nil {
		return
	}
	os.Remove(l.path)
	l.file.Close()
}

// unlock releases the lock and leaves the file, for the next sweep to find
// free again.
func (l *processLock) unlock() { l.file.Close() }

// lockDeadProcesses returns the locks of the processes whose lock files in
// the directory beside dbPath were free: their processes are gone. The
// caller reschedules their operations, then releases the locks, deleting
// the files, or only unlocks them if it could not.
func lockDeadProcesses(dbPath string) ([]*processLock, error) {
	if !processLocksSupported {
		return nil, nil
	}
	dir := processLockDir(dbPath)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the process locks: %w", err)
	}
	var dead []*processLock
	for _, entry := range entries {
		if strings.HasPrefix(entry.Name(), ".") {
			continue // a process locking its file, or an interrupted attempt at it
		}
		path := filepath.Join(dir, entry.Name())
		file, err := os.Open(path)
		if err != nil {
			continue // released meanwhile
		}
		if locked, _ := tryLock(file); !locked {
			file.Close() // alive
			continue
		}
		dead = append(dead, &processLock{file: file, path: path})
	}
	return dead, nil
}

// processIDs returns the IDs of the processes whose locks are locks.
func processIDs(locks []*processLock) []string {
	ids := make([]string, len(locks))
	for i, l := range locks {
		ids[i] = filepath.Base(l.path)
	}
	return ids
}
