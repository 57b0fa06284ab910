package file

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// qcow2Magic starts every qcow2 image. gonbd probes a file as qcow2 when
// its first four bytes are these, and as raw otherwise.
var qcow2Magic = [4]byte{'Q', 'F', 'I', 0xfb}

// writeHead writes p at the absolute file position pos, which lies in the
// first len(qcow2Magic) bytes of a file whose format was probed (probed=on).
// It rejects with EPERM a write that would make the file start with the
// qcow2 magic. Otherwise a client could write a qcow2 header naming any
// host file as its backing file, and the next start without -f would serve
// that file. qemu-nbd 7.2 restricts writes to a probed raw image the same
// way.
func (b *Backend) writeHead(p []byte, pos int64) (int, error) {
	b.headMu.Lock()
	defer b.headMu.Unlock()

	var head [len(qcow2Magic)]byte
	n := min(int64(len(head)), b.offset+b.size)
	if err := b.readHead(head[:n]); err != nil {
		return 0, err
	}
	copy(head[pos:], p)
	if head == qcow2Magic {
		return 0, fmt.Errorf("write %s at %d: rejected because the image would start with the qcow2 magic "+
			"and its format was probed (give -f raw to allow it): %w", b.path, pos, unix.EPERM)
	}
	return b.writeAt(p, pos)
}

// readHead reads the first len(p) bytes of the file.
func (b *Backend) readHead(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	var err error
	if b.direct != nil {
		_, err = b.direct.readAt(p, 0)
	} else {
		_, err = b.f.ReadAt(p, 0)
	}
	if err != nil {
		return fmt.Errorf("read %s at 0: %w", b.path, err)
	}
	return nil
}
