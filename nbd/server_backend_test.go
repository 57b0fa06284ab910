package nbd

import (
	"bytes"
	"context"
	"sync"
	"syscall"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
)

// testBackend is an in-memory backend with every optional capability, so
// the server advertises and serves all commands. Blocks of
// testBlockSize that were trimmed or zeroed read as zero and are
// reported as holes. failWith, when set, makes every data call fail.
type testBackend struct {
	mu       sync.Mutex
	data     []byte
	zero     []bool // per block: reads as zero and is a hole
	syncs    int
	fuaCount int
	failWith error
	readOnly bool
	// gate, when non-nil, blocks reads until it is closed; each blocked
	// read first sends on entered, if that is non-nil.
	gate    chan struct{}
	entered chan struct{}
	// fastZero is what CanFastZero reports.
	fastZero bool
	// noFastZero makes Zero with ZeroFast fail.
	noFastZero bool
	lastZero   export.ZeroFlags
	cached     int64
}

const testBlockSize = 4096

func newTestBackend(size int) *testBackend {
	return &testBackend{
		data:     make([]byte, size),
		zero:     make([]bool, (size+testBlockSize-1)/testBlockSize),
		fastZero: true,
	}
}

func (b *testBackend) ReadAt(p []byte, off int64) (int, error) {
	if b.gate != nil {
		if b.entered != nil {
			b.entered <- struct{}{}
		}
		<-b.gate
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failWith != nil {
		return 0, b.failWith
	}
	return copy(p, b.data[off:]), nil
}

func (b *testBackend) WriteAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failWith != nil {
		return 0, b.failWith
	}
	if off+int64(len(p)) > int64(len(b.data)) {
		return 0, syscall.ENOSPC
	}
	b.markData(off, int64(len(p)))
	return copy(b.data[off:], p), nil
}

// markData clears the zero flag of blocks touched by a write.
func (b *testBackend) markData(off, n int64) {
	for blk := off / testBlockSize; blk*testBlockSize < off+n; blk++ {
		b.zero[blk] = false
	}
}

func (b *testBackend) WriteAtFUA(p []byte, off int64) (int, error) {
	n, err := b.WriteAt(p, off)
	b.mu.Lock()
	b.fuaCount++
	b.mu.Unlock()
	return n, err
}

func (b *testBackend) Size() (int64, error) { return int64(len(b.data)), nil }

func (b *testBackend) Sync() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.syncs++
	return b.failWith
}

func (b *testBackend) Trim(off, n int64) error { return b.Zero(off, n, export.ZeroMayTrim) }

func (b *testBackend) Zero(off, n int64, flags export.ZeroFlags) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastZero = flags
	if flags&export.ZeroFast != 0 && b.noFastZero {
		return export.ErrFastZeroUnsupported
	}
	if b.failWith != nil {
		return b.failWith
	}
	clear(b.data[off : off+n])
	// Whole blocks inside the range become holes.
	for blk := (off + testBlockSize - 1) / testBlockSize; (blk+1)*testBlockSize <= off+n; blk++ {
		b.zero[blk] = true
	}
	return nil
}

func (b *testBackend) CanFastZero() bool { return b.fastZero }

func (b *testBackend) Cache(off, n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cached += n
	return b.failWith
}

// Extents reports runs of blocks with equal zero flags from off on.
func (b *testBackend) Extents(_ context.Context, off, n int64) ([]export.Extent, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failWith != nil {
		return nil, b.failWith
	}
	var exts []export.Extent
	pos := off
	for pos < off+n && pos < int64(len(b.data)) {
		blk := pos / testBlockSize
		end := min((blk+1)*testBlockSize, int64(len(b.data)))
		var flags uint32
		if b.zero[blk] {
			flags = proto.StateHole | proto.StateZero
		}
		if k := len(exts); k > 0 && exts[k-1].Flags == flags {
			exts[k-1].Length += end - pos
		} else {
			exts = append(exts, export.Extent{Length: end - pos, Flags: flags})
		}
		pos = end
	}
	return exts, nil
}

// AllocationDepth reports depth 0 for holes and 1 for data.
func (b *testBackend) AllocationDepth(ctx context.Context, off, n int64) ([]export.Extent, error) {
	exts, err := b.Extents(ctx, off, n)
	for i := range exts {
		if exts[i].Flags != 0 {
			exts[i].Flags = 0
		} else {
			exts[i].Flags = 1
		}
	}
	return exts, err
}

func (b *testBackend) ReadOnly() bool     { return b.readOnly }
func (b *testBackend) CanMultiConn() bool { return true }
func (b *testBackend) Rotational() bool   { return false }

// counters returns the number of syncs and FUA writes so far.
func (b *testBackend) counters() (syncs, fua int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.syncs, b.fuaCount
}

// snapshot returns a copy of the data and the last zero flags.
func (b *testBackend) snapshot() ([]byte, export.ZeroFlags, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.data), b.lastZero, b.cached
}

// plainBackend implements only the minimum contract.
type plainBackend struct{ tb *testBackend }

func (p plainBackend) ReadAt(b []byte, off int64) (int, error)  { return p.tb.ReadAt(b, off) }
func (p plainBackend) WriteAt(b []byte, off int64) (int, error) { return p.tb.WriteAt(b, off) }
func (p plainBackend) Size() (int64, error)                     { return p.tb.Size() }
func (p plainBackend) Sync() error                              { return p.tb.Sync() }
