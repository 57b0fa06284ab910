// Package memory registers the "memory" export driver: a sparse RAM disk
// of a given size, like nbdkit's memory plugin. Pages are allocated on first
// write and freed by trim or write zeroes, so an empty 1 TiB disk costs
// nothing.
package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
)

// PageSize is the allocation unit.
const PageSize = 64 << 10

type page = [PageSize]byte

func init() {
	export.Register(export.Plugin{
		Name:        "memory",
		Description: "sparse RAM disk (size=SIZE, required)",
		Keys:        []string{"size"},
		Open:        Open,
	})
}

// Backend is a sparse in-memory disk, safe for concurrent use.
type Backend struct {
	size     int64
	readOnly bool
	noMulti  bool // multi-conn=off

	mu    sync.RWMutex
	pages map[int64]*page // by page index; a missing page reads as zeroes
}

// errRange is returned for a request past the end of the disk; the server
// checks bounds first, so it means a caller bug.
var errRange = errors.New("memory: request past the end of the disk")

// Open opens a memory export from options size (required) and read-only.
func Open(opts export.Options) (export.Backend, error) {
	if err := opts.Check("memory", []string{"size"}); err != nil {
		return nil, err
	}
	if _, ok := opts["size"]; !ok {
		return nil, fmt.Errorf("memory: missing size: add size=SIZE, such as size=1G")
	}
	size, err := opts.Size("size", 0)
	if err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	readOnly, err := opts.Bool("read-only", false)
	if err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	multiConn, err := opts.MultiConn()
	if err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	b := New(size, readOnly)
	b.noMulti = !multiConn
	return b, nil
}

// New returns an empty memory disk of size bytes.
func New(size int64, readOnly bool) *Backend {
	return &Backend{size: size, readOnly: readOnly, pages: map[int64]*page{}}
}

func (b *Backend) inRange(off, length int64) bool {
	return off >= 0 && length >= 0 && off <= b.size && length <= b.size-off
}

func (b *Backend) ReadAt(p []byte, off int64) (int, error) {
	if !b.inRange(off, int64(len(p))) {
		return 0, errRange
	}

	b.mu.RLock()
	defer b.mu.RUnlock()

	done := 0
	for done < len(p) {
		pos := off + int64(done)
		idx, in := pos/PageSize, int(pos%PageSize)
		n := min(PageSize-in, len(p)-done)
		if pg := b.pages[idx]; pg != nil {
			copy(p[done:done+n], pg[in:in+n])
		} else {
			clear(p[done : done+n])
		}
		done += n
	}
	return len(p), nil
}

func (b *Backend) WriteAt(p []byte, off int64) (int, error) {
	if b.readOnly {
		return 0, export.ErrReadOnly
	}
	if !b.inRange(off, int64(len(p))) {
		return 0, errRange
	}

	b.mu.Lock()
	defer b.mu.Unlock()

	done := 0
	for done < len(p) {
		pos := off + int64(done)
		idx, in := pos/PageSize, int(pos%PageSize)
		n := min(PageSize-in, len(p)-done)
		pg := b.pages[idx]
		if pg == nil {
			pg = new(page)
			b.pages[idx] = pg
		}
		copy(pg[in:in+n], p[done:done+n])
		done += n
	}
	return len(p), nil
}

// WriteAtFUA writes p; RAM needs no flush.
func (b *Backend) WriteAtFUA(p []byte, off int64) (int, error) { return b.WriteAt(p, off) }

func (b *Backend) Size() (int64, error) { return b.size, nil }
func (b *Backend) Sync() error          { return nil }

// Trim frees the pages in the range and zeroes the partial pages at its
// ends, so trimmed data reads as zeroes.
func (b *Backend) Trim(off, length int64) error {
	return b.Zero(off, length, export.ZeroMayTrim)
}

// Zero frees whole pages in the range and clears the partial ones. It is
// always fast, so ZeroFast never fails.
func (b *Backend) Zero(off, length int64, flags export.ZeroFlags) error {
	if b.readOnly {
		return export.ErrReadOnly
	}
	if !b.inRange(off, length) {
		return errRange
	}

	b.mu.Lock()
	defer b.mu.Unlock()

	end := off + length
	for pos := off; pos < end; {
		idx, in := pos/PageSize, pos%PageSize
		n := min(PageSize-in, end-pos)
		if pg := b.pages[idx]; pg != nil {
			if n == PageSize {
				delete(b.pages, idx)
			} else {
				clear(pg[in : in+n])
			}
		}
		pos += n
	}
	return nil
}

func (b *Backend) CanFastZero() bool             { return true }
func (b *Backend) Cache(off, length int64) error { return nil }
func (b *Backend) ReadOnly() bool                { return b.readOnly }
func (b *Backend) CanMultiConn() bool            { return !b.noMulti }

// maxExtents bounds one Extents reply; the client asks again for the rest.
const maxExtents = 1024

// Extents reports allocated pages as data and missing pages as holes that
// read as zeroes, merging neighbours with the same state.
func (b *Backend) Extents(ctx context.Context, off, length int64) ([]export.Extent, error) {
	if !b.inRange(off, length) {
		return nil, errRange
	}

	b.mu.RLock()
	defer b.mu.RUnlock()

	var extents []export.Extent
	end := off + length
	for pos := off; pos < end; {
		idx, in := pos/PageSize, pos%PageSize
		n := min(PageSize-in, end-pos)
		var flags uint32
		if b.pages[idx] == nil {
			flags = proto.StateHole | proto.StateZero
		}
		if k := len(extents) - 1; k >= 0 && extents[k].Flags == flags {
			extents[k].Length += n
		} else {
			if len(extents) == maxExtents {
				break
			}
			extents = append(extents, export.Extent{Length: n, Flags: flags})
		}
		pos += n
	}
	return extents, nil
}

// Allocated returns the number of allocated pages, for tests and logs.
func (b *Backend) Allocated() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.pages)
}

// AllocationDepth reports the whole range at depth 1: the image has no
// backing file, so every byte is local, which is what qemu-nbd -A reports
// for raw images (checked with qemu-nbd 7.2 and nbdinfo --map).
func (b *Backend) AllocationDepth(ctx context.Context, off, length int64) ([]export.Extent, error) {
	return []export.Extent{{Length: length, Flags: 1}}, nil
}
