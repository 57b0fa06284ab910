package file

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directAlign is the alignment O_DIRECT needs for file positions, lengths
// and memory. 4096 covers devices with 512-byte and 4 KiB logical blocks.
const directAlign = 4096

// directIO serves cache=none and cache=directsync. O_DIRECT rejects
// unaligned requests, but NBD clients may send any offset and length, so
// unaligned requests go through aligned bounce buffers and partial blocks
// are read, modified and written back.
type directIO struct {
	b *Backend

	// buffered is the same file without O_DIRECT, for the last partial
	// block: a direct write there would extend the file to the block end.
	buffered *os.File
	// tailStart is the file position where buffered I/O starts: the file
	// end rounded down to directAlign.
	tailStart int64

	// rmw is held exclusively by a read-modify-write of partial blocks and
	// shared by aligned writes, so an aligned write cannot land between the
	// read and the write of a partial block it overlaps.
	rmw sync.RWMutex

	pool sync.Pool // of *[]byte aligned bounce buffers
}

func newDirectIO(b *Backend) (*directIO, error) {
	flags := os.O_RDWR
	if b.readOnly {
		flags = os.O_RDONLY
	}
	if b.cache.dsync {
		flags |= unix.O_DSYNC
	}
	buffered, err := os.OpenFile(b.path, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", b.path, err)
	}
	return &directIO{
		b:         b,
		buffered:  buffered,
		tailStart: alignDown(b.offset + b.size),
	}, nil
}

func isDirectUnsupported(err error) bool {
	return errors.Is(err, unix.EINVAL)
}

func alignDown(n int64) int64 { return n &^ (directAlign - 1) }
func alignUp(n int64) int64   { return (n + directAlign - 1) &^ (directAlign - 1) }

// alignedBuffer returns a zeroed buffer of n bytes whose first byte is
// aligned to directAlign.
func alignedBuffer(n int) []byte {
	raw := make([]byte, n+directAlign)
	shift := int(-uintptr(unsafe.Pointer(&raw[0])) & (directAlign - 1))
	return raw[shift : shift+n : shift+n]
}

func isAligned(p []byte, pos int64) bool {
	return len(p) > 0 && uintptr(unsafe.Pointer(&p[0]))&(directAlign-1) == 0 &&
		pos&(directAlign-1) == 0 && int64(len(p))&(directAlign-1) == 0
}

// bounce returns an aligned buffer of at least n bytes; release gives it
// back.
func (d *directIO) bounce(n int) *[]byte {
	if v, ok := d.pool.Get().(*[]byte); ok && cap(*v) >= n {
		*v = (*v)[:n]
		return v
	}
	buf := alignedBuffer(n)
	return &buf
}

func (d *directIO) release(buf *[]byte) { d.pool.Put(buf) }

// split returns how many bytes of a request at pos of length n lie before
// tailStart, where O_DIRECT is used.
func (d *directIO) split(pos int64, n int) int {
	if pos >= d.tailStart {
		return 0
	}
	return int(min(int64(n), d.tailStart-pos))
}

func (d *directIO) readAt(p []byte, pos int64) (int, error) {
	k := d.split(pos, len(p))
	if k > 0 {
		if err := d.readDirect(p[:k], pos); err != nil {
			return 0, err
		}
	}
	if k < len(p) {
		if _, err := d.buffered.ReadAt(p[k:], pos+int64(k)); err != nil {
			return 0, fmt.Errorf("read %s at %d: %w", d.b.path, pos+int64(k), err)
		}
	}
	return len(p), nil
}

// readDirect reads p at pos, all of it before tailStart.
func (d *directIO) readDirect(p []byte, pos int64) error {
	if isAligned(p, pos) {
		return d.preadFull(p, pos)
	}

	start, end := alignDown(pos), alignUp(pos+int64(len(p)))
	buf := d.bounce(int(end - start))
	defer d.release(buf)
	if err := d.preadFull(*buf, start); err != nil {
		return err
	}
	copy(p, (*buf)[pos-start:])
	return nil
}

func (d *directIO) preadFull(p []byte, pos int64) error {
	n, err := d.b.f.ReadAt(p, pos)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("read %s at %d: %w", d.b.path, pos, err)
	}
	return nil
}

func (d *directIO) writeAt(p []byte, pos int64) (int, error) {
	k := d.split(pos, len(p))
	if k > 0 {
		if err := d.writeDirect(p[:k], pos); err != nil {
			return 0, err
		}
	}
	if k < len(p) {
		if _, err := d.buffered.WriteAt(p[k:], pos+int64(k)); err != nil {
			return 0, fmt.Errorf("write %s at %d: %w", d.b.path, pos+int64(k), err)
		}
	}
	return len(p), nil
}

// writeDirect writes p at pos, all of it before tailStart.
func (d *directIO) writeDirect(p []byte, pos int64) error {
	start, end := alignDown(pos), alignUp(pos+int64(len(p)))
	if start == pos && end == pos+int64(len(p)) {
		d.rmw.RLock()
		defer d.rmw.RUnlock()
		if isAligned(p, pos) {
			return d.pwrite(p, pos)
		}
		buf := d.bounce(len(p))
		defer d.release(buf)
		copy(*buf, p)
		return d.pwrite(*buf, pos)
	}

	d.rmw.Lock()
	defer d.rmw.Unlock()

	buf := d.bounce(int(end - start))
	defer d.release(buf)
	b := *buf
	// Only the first and last blocks are partial; read just those.
	if err := d.preadFull(b[:directAlign], start); err != nil {
		return err
	}
	if end-directAlign > start {
		if err := d.preadFull(b[len(b)-directAlign:], end-directAlign); err != nil {
			return err
		}
	}
	copy(b[pos-start:], p)
	return d.pwrite(b, start)
}

func (d *directIO) pwrite(p []byte, pos int64) error {
	if _, err := d.b.f.WriteAt(p, pos); err != nil {
		return fmt.Errorf("write %s at %d: %w", d.b.path, pos, err)
	}
	return nil
}
