package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
	"golang.org/x/sys/unix"
)

// Trim punches a hole with --discard=unmap and does nothing otherwise, as
// qemu-nbd does: the trim flag is advertised either way and a discard is
// only a hint.
func (b *Backend) Trim(off, length int64) error {
	if b.readOnly {
		return export.ErrReadOnly
	}
	if !b.inRange(off, length) {
		return errRange
	}
	if !b.unmap || length == 0 {
		return nil
	}

	err := unix.Fallocate(b.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, b.offset+off, length)
	if isUnsupported(err) {
		return nil // the file system cannot punch this hole; the hint is dropped
	}
	if err != nil {
		return fmt.Errorf("punch hole in %s at %d+%d: %w", b.path, b.offset+off, length, err)
	}
	return nil
}

// Zero makes the range read as zeroes. It punches a hole when the client
// allows it and --discard=unmap is set, else uses FALLOC_FL_ZERO_RANGE, and
// falls back to writing zeroes unless flags has ZeroFast.
func (b *Backend) Zero(off, length int64, flags export.ZeroFlags) error {
	if b.readOnly {
		return export.ErrReadOnly
	}
	if !b.inRange(off, length) {
		return errRange
	}
	if length == 0 {
		return nil
	}
	pos := b.offset + off

	if flags&export.ZeroMayTrim != 0 && b.unmap {
		err := unix.Fallocate(b.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, pos, length)
		if err == nil {
			return b.flushIfDsync()
		}
		if !isUnsupported(err) {
			return fmt.Errorf("punch hole in %s at %d+%d: %w", b.path, pos, length, err)
		}
	}

	err := unix.Fallocate(b.fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, pos, length)
	if err == nil {
		return b.flushIfDsync()
	}
	if !isUnsupported(err) {
		return fmt.Errorf("zero range in %s at %d+%d: %w", b.path, pos, length, err)
	}

	if flags&export.ZeroFast != 0 {
		return export.ErrFastZeroUnsupported
	}
	return b.writeZeroes(pos, length)
}

// flushIfDsync makes a fallocate durable for cache modes whose writes are
// durable on return, because O_DSYNC does not cover fallocate.
func (b *Backend) flushIfDsync() error {
	if !b.cache.dsync {
		return nil
	}
	if err := unix.Fdatasync(b.fd); err != nil {
		return fmt.Errorf("fdatasync %s: %w", b.path, err)
	}
	return nil
}

// zeroChunk is the size of the buffer writeZeroes writes from.
const zeroChunk = 1 << 20

// zeroes is aligned for O_DIRECT, so direct writes use it without a copy.
var zeroes = alignedBuffer(zeroChunk)

func (b *Backend) writeZeroes(pos, length int64) error {
	for length > 0 {
		n := min(length, zeroChunk)
		if _, err := b.writeAt(zeroes[:n], pos); err != nil {
			return err
		}
		pos += n
		length -= n
	}
	return nil
}

// CanFastZero is true: Zero with ZeroFast fails with
// export.ErrFastZeroUnsupported where fallocate cannot zero the range.
func (b *Backend) CanFastZero() bool { return true }

func isUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL)
}

// Cache starts kernel readahead of the range (POSIX_FADV_WILLNEED).
func (b *Backend) Cache(off, length int64) error {
	if !b.inRange(off, length) {
		return errRange
	}
	if err := unix.Fadvise(b.fd, b.offset+off, length, unix.FADV_WILLNEED); err != nil {
		return fmt.Errorf("fadvise %s: %w", b.path, err)
	}
	return nil
}

// maxExtents bounds one Extents reply; the client asks again for the rest.
const maxExtents = 1024

// Extents reports data and holes with lseek SEEK_DATA and SEEK_HOLE. Holes
// read as zeroes. A block device, or a file system without SEEK_DATA,
// reports the whole range as data.
func (b *Backend) Extents(ctx context.Context, off, length int64) ([]export.Extent, error) {
	if !b.inRange(off, length) {
		return nil, errRange
	}
	if b.blockDev {
		return []export.Extent{{Length: length}}, nil
	}

	const holeFlags = proto.StateHole | proto.StateZero
	var extents []export.Extent
	add := func(n int64, flags uint32) {
		if k := len(extents) - 1; k >= 0 && extents[k].Flags == flags {
			extents[k].Length += n
			return
		}
		extents = append(extents, export.Extent{Length: n, Flags: flags})
	}

	pos, end := b.offset+off, b.offset+off+length
	for pos < end && len(extents) < maxExtents {
		data, err := unix.Seek(b.fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			data = end // no data after pos: the rest is a hole
		} else if err != nil {
			add(end-pos, 0)
			break
		}
		if data > pos {
			n := min(data, end) - pos
			add(n, holeFlags)
			pos += n
			continue
		}

		hole, err := unix.Seek(b.fd, pos, unix.SEEK_HOLE)
		if err != nil || hole <= pos {
			add(end-pos, 0)
			break
		}
		n := min(hole, end) - pos
		add(n, 0)
		pos += n
	}
	return extents, nil
}

// blockDeviceSize returns a block device's size in bytes (BLKGETSIZE64).
func blockDeviceSize(f *os.File) (int64, error) {
	var size uint64
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
	if errno != 0 {
		return 0, fmt.Errorf("ioctl BLKGETSIZE64: %w", errno)
	}
	return int64(size), nil
}

// AllocationDepth reports the whole range at depth 1: the image has no
// backing file, so every byte is local, which is what qemu-nbd -A reports
// for raw images (checked with qemu-nbd 7.2 and nbdinfo --map).
func (b *Backend) AllocationDepth(ctx context.Context, off, length int64) ([]export.Extent, error) {
	return []export.Extent{{Length: length, Flags: 1}}, nil
}
