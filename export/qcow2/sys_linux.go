package qcow2

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// seekDataHole returns the next data offset at or after off (size when none)
// and the end of that data.
func seekDataHole(f *os.File, off int64) (data, hole int64, err error) {
	fd := int(f.Fd())
	data, err = unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		st, serr := f.Stat()
		if serr != nil {
			return 0, 0, serr
		}
		return st.Size(), st.Size(), nil
	}
	if err != nil {
		return 0, 0, err
	}
	hole, err = unix.Seek(fd, data, unix.SEEK_HOLE)
	return data, hole, err
}

// punchHole releases the file blocks of a freed cluster.
func punchHole(f *os.File, off, length int64) error {
	return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}
