// Package export defines what the NBD server needs from an export: go-nbd's
// backend.Backend plus optional capability interfaces, and a registry of
// named plugins that open backends from key=value options.
package export

import (
	"context"
	"os"

	"github.com/pojntfx/go-nbd/pkg/backend"
)

// Backend is the minimum contract: go-nbd's backend.Backend (ReadAt,
// WriteAt, Size, Sync), so any go-nbd backend is served unchanged.
type Backend = backend.Backend

// Extent is one run of blocks with the same block status flags. For
// base:allocation, Flags holds proto.StateHole and proto.StateZero; for
// qemu:allocation-depth it holds the depth (0 unallocated, 1 the top image,
// 2 its backing file, ...).
type Extent struct {
	Length int64
	Flags  uint32
}

// Optional capabilities. The server advertises exactly those a backend
// implements (and, for ReadOnlyer/MultiConner, reports as true).

// Trimmer discards a range (NBD_CMD_TRIM). Reads of a trimmed range may
// return anything until it is written again.
type Trimmer interface {
	Trim(off, length int64) error
}

// ZeroFlags qualify a Zero request.
type ZeroFlags uint8

const (
	// ZeroMayTrim allows the backend to punch a hole (the client did not set
	// NBD_CMD_FLAG_NO_HOLE).
	ZeroMayTrim ZeroFlags = 1 << iota
	// ZeroFast requests that the backend fail with ErrFastZeroUnsupported unless
	// zeroing is faster than writing zeroes (NBD_CMD_FLAG_FAST_ZERO).
	ZeroFast
)

// Zeroer writes zeroes over a range (NBD_CMD_WRITE_ZEROES).
type Zeroer interface {
	Zero(off, length int64, flags ZeroFlags) error
}

// FastZeroer is implemented by a Zeroer that honours ZeroFast; only then is
// NBD_FLAG_SEND_FAST_ZERO advertised.
type FastZeroer interface {
	Zeroer
	CanFastZero() bool
}

// Extenter reports block status for base:allocation. It returns extents
// that start at off and together cover at least one byte; the server trims
// the list to the request.
type Extenter interface {
	Extents(ctx context.Context, off, length int64) ([]Extent, error)
}

// DepthExtenter reports qemu:allocation-depth extents, as qemu-nbd -A does.
type DepthExtenter interface {
	AllocationDepth(ctx context.Context, off, length int64) ([]Extent, error)
}

// Cacher prefetches a range (NBD_CMD_CACHE).
type Cacher interface {
	Cache(off, length int64) error
}

// FUAWriter writes a range and makes it durable before returning
// (NBD_CMD_FLAG_FUA). Backends without it get WriteAt followed by Sync.
type FUAWriter interface {
	WriteAtFUA(p []byte, off int64) (int, error)
}

// ReadOnlyer reports whether the backend refuses writes.
type ReadOnlyer interface {
	ReadOnly() bool
}

// MultiConner reports whether several connections to the same backend see
// each other's writes once flushed (NBD_FLAG_CAN_MULTI_CONN).
type MultiConner interface {
	CanMultiConn() bool
}

// Rotationaler reports whether the storage is rotational.
type Rotationaler interface {
	Rotational() bool
}

// BlockSizer reports the block size constraints (minimum, preferred,
// maximum) for NBD_INFO_BLOCK_SIZE.
type BlockSizer interface {
	BlockSize() (minimum, preferred, maximum uint32)
}

// FileSectioner is implemented by backends whose data at an offset is the
// data of an open file at some position. The server then sends read
// replies from the file to the socket with sendfile, without copying
// them through its own memory.
type FileSectioner interface {
	// FileSection returns the file and position holding length bytes at
	// off, or ok false when those bytes must be read with ReadAt.
	FileSection(off, length int64) (f *os.File, pos int64, ok bool)
}
