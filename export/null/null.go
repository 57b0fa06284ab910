// Package null registers the "null" export driver: an export of a given
// size that reads as zeroes and discards writes, like nbdkit's null plugin.
// It measures the server's own overhead.
package null

import (
	"context"
	"fmt"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
)

func init() {
	export.Register(export.Plugin{
		Name:        "null",
		Description: "reads zeroes, discards writes (size=SIZE, default 0)",
		Keys:        []string{"size"},
		Open:        Open,
	})
}

// Backend is a null export.
type Backend struct {
	size      int64
	readOnly  bool
	multiConn bool
}

// Open opens a null export from options size (default 0) and read-only.
func Open(opts export.Options) (export.Backend, error) {
	if err := opts.Check("null", []string{"size"}); err != nil {
		return nil, err
	}
	size, err := opts.Size("size", 0)
	if err != nil {
		return nil, fmt.Errorf("null: %w", err)
	}
	readOnly, err := opts.Bool("read-only", false)
	if err != nil {
		return nil, fmt.Errorf("null: %w", err)
	}
	multiConn, err := opts.MultiConn()
	if err != nil {
		return nil, fmt.Errorf("null: %w", err)
	}
	return &Backend{size: size, readOnly: readOnly, multiConn: multiConn}, nil
}

func (b *Backend) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}

func (b *Backend) WriteAt(p []byte, off int64) (int, error) {
	if b.readOnly {
		return 0, export.ErrReadOnly
	}
	return len(p), nil
}

func (b *Backend) WriteAtFUA(p []byte, off int64) (int, error) { return b.WriteAt(p, off) }

func (b *Backend) Size() (int64, error) { return b.size, nil }
func (b *Backend) Sync() error          { return nil }

func (b *Backend) Trim(off, length int64) error {
	if b.readOnly {
		return export.ErrReadOnly
	}
	return nil
}

func (b *Backend) Zero(off, length int64, flags export.ZeroFlags) error {
	if b.readOnly {
		return export.ErrReadOnly
	}
	return nil
}

func (b *Backend) CanFastZero() bool             { return true }
func (b *Backend) Cache(off, length int64) error { return nil }
func (b *Backend) ReadOnly() bool                { return b.readOnly }
func (b *Backend) CanMultiConn() bool            { return b.multiConn }

// Extents reports the whole range as a hole that reads as zeroes.
func (b *Backend) Extents(ctx context.Context, off, length int64) ([]export.Extent, error) {
	return []export.Extent{{Length: length, Flags: proto.StateHole | proto.StateZero}}, nil
}

// AllocationDepth reports the whole range at depth 1: the image has no
// backing file, so every byte is local, which is what qemu-nbd -A reports
// for raw images (checked with qemu-nbd 7.2 and nbdinfo --map).
func (b *Backend) AllocationDepth(ctx context.Context, off, length int64) ([]export.Extent, error) {
	return []export.Extent{{Length: length, Flags: 1}}, nil
}
