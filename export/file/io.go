package file

import (
	"errors"
	"fmt"
	"os"

	"github.com/gonbd/gonbd/export"
	"golang.org/x/sys/unix"
)

// errRange is returned for a request past the end of the export; the server
// checks bounds first, so it means a caller bug.
var errRange = errors.New("file: request past the end of the export")

func (b *Backend) inRange(off, length int64) bool {
	return off >= 0 && length >= 0 && off <= b.size && length <= b.size-off
}

// ReadAt reads from the image at off bytes past the export's offset.
func (b *Backend) ReadAt(p []byte, off int64) (int, error) {
	if !b.inRange(off, int64(len(p))) {
		return 0, errRange
	}
	if b.direct != nil {
		return b.direct.readAt(p, b.offset+off)
	}
	n, err := b.f.ReadAt(p, b.offset+off)
	if err != nil {
		return n, fmt.Errorf("read %s at %d: %w", b.path, b.offset+off, err)
	}
	return n, nil
}

// FileSection returns the image file and the position of the export's
// bytes at off, except with O_DIRECT, where reads must not go through the
// page cache.
func (b *Backend) FileSection(off, length int64) (*os.File, int64, bool) {
	if b.direct != nil || !b.inRange(off, length) {
		return nil, 0, false
	}
	return b.f, b.offset + off, true
}

// WriteAt writes to the image. With detect-zeroes on or unmap, a buffer of
// zeroes becomes a write-zeroes request instead, as QEMU does.
func (b *Backend) WriteAt(p []byte, off int64) (int, error) {
	if b.readOnly {
		return 0, export.ErrReadOnly
	}
	if !b.inRange(off, int64(len(p))) {
		return 0, errRange
	}

	if b.detect != "off" && isZero(p) {
		var flags export.ZeroFlags
		if b.detect == "unmap" {
			flags = export.ZeroMayTrim
		}
		if err := b.Zero(off, int64(len(p)), flags); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	pos := b.offset + off
	if b.probed && pos < int64(len(qcow2Magic)) {
		return b.writeHead(p, pos)
	}
	return b.writeAt(p, pos)
}

// writeAt writes p at the absolute file position pos.
func (b *Backend) writeAt(p []byte, pos int64) (int, error) {
	if b.direct != nil {
		return b.direct.writeAt(p, pos)
	}
	n, err := b.f.WriteAt(p, pos)
	if err != nil {
		return n, fmt.Errorf("write %s at %d: %w", b.path, pos, err)
	}
	return n, nil
}

// WriteAtFUA writes p and makes it durable before returning. With
// cache=writethrough or directsync the file is open with O_DSYNC, so the
// write alone is enough.
func (b *Backend) WriteAtFUA(p []byte, off int64) (int, error) {
	n, err := b.WriteAt(p, off)
	if err != nil || b.cache.dsync {
		return n, err
	}
	if err := unix.Fdatasync(b.fd); err != nil {
		return n, fmt.Errorf("fdatasync %s: %w", b.path, err)
	}
	return n, nil
}

// isZero reports whether p contains only zero bytes.
func isZero(p []byte) bool {
	// Compare eight bytes at a time; the tail byte by byte.
	i := 0
	for ; i+8 <= len(p); i += 8 {
		if p[i]|p[i+1]|p[i+2]|p[i+3]|p[i+4]|p[i+5]|p[i+6]|p[i+7] != 0 {
			return false
		}
	}
	for ; i < len(p); i++ {
		if p[i] != 0 {
			return false
		}
	}
	return true
}
