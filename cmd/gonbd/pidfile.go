package main

import (
	"errors"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// writePIDFile writes the process ID to path and locks the file for as long
// as the server runs; release removes it. Like qemu-nbd 7.2, gonbd refuses
// a pid file that another running server holds, so two servers never
// overwrite or remove each other's pid file. The lock is an open file
// description lock, which conflicts with the lockf lock qemu-nbd takes.
func writePIDFile(path string) (release func(), err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, usageErrorf("write pid file %s: %v: check the --pid-file path", path, unwrapAll(err))
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()

	lock := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lock); err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, usageErrorf("pid file %s is locked by another running server: stop it or pick another --pid-file", path)
		}
		return nil, usageErrorf("lock pid file %s: %v", path, err)
	}

	// The previous owner may have removed path between our open and lock.
	opened, err := f.Stat()
	if err != nil {
		return nil, usageErrorf("stat pid file %s: %v", path, err)
	}
	if named, err := os.Stat(path); err != nil || !os.SameFile(opened, named) {
		return nil, usageErrorf("pid file %s was replaced while gonbd locked it: start gonbd again", path)
	}

	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := f.Truncate(0); err != nil {
		return nil, usageErrorf("write pid file %s: %v", path, unwrapAll(err))
	}
	if _, err := f.WriteAt(pid, 0); err != nil {
		return nil, usageErrorf("write pid file %s: %v", path, unwrapAll(err))
	}
	return func() {
		os.Remove(path)
		f.Close()
	}, nil
}
