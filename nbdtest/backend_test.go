package nbdtest_test

import (
	"errors"
	"sync"
)

// sliceBackend is an export.Backend over a byte slice that counts Sync
// calls.
type sliceBackend struct {
	mu        sync.Mutex
	data      []byte
	syncCount int
}

func newSliceBackend(size int) *sliceBackend {
	return &sliceBackend{data: make([]byte, size)}
}

var errOutOfRange = errors.New("sliceBackend: request past the end")

func (b *sliceBackend) ReadAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(b.data)) {
		return 0, errOutOfRange
	}
	return copy(p, b.data[off:]), nil
}

func (b *sliceBackend) WriteAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(b.data)) {
		return 0, errOutOfRange
	}
	return copy(b.data[off:], p), nil
}

func (b *sliceBackend) Size() (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int64(len(b.data)), nil
}

func (b *sliceBackend) Sync() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.syncCount++
	return nil
}

func (b *sliceBackend) bytes(off, n int) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.data[off:off+n]...)
}

func (b *sliceBackend) syncs() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.syncCount
}

// blockingBackend blocks every read until release is closed, and closes
// entered when the first read arrives.
type blockingBackend struct {
	*sliceBackend
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blockingBackend) ReadAt(p []byte, off int64) (int, error) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	return b.sliceBackend.ReadAt(p, off)
}
