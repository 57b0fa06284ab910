package qcow2

import (
	"context"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
)

// maxExtents bounds one block status reply; the client asks again for the
// rest.
const maxExtents = 1024

// status implements layer. Like QEMU's block layer (qemu-nbd 7.2), the
// zeroes past the end of a short backing image count as allocated in that
// image.
func (img *Image) status(off, length int64) (int64, int, bool, error) {
	if off >= img.size {
		return length, 1, true, nil
	}
	length = min(length, img.size-off)
	img.mu.RLock()
	r, err := img.mapRun(off, length)
	img.mu.RUnlock()
	if err != nil {
		return 0, 0, false, err
	}
	switch r.kind {
	case runData, runCompressed:
		return r.n, 1, false, nil
	case runZero:
		return r.n, 1, true, nil
	}
	if img.backing == nil {
		return r.n, 0, true, nil
	}
	n, depth, zero, err := img.backing.status(off, r.n)
	if depth > 0 {
		depth++
	}
	return n, depth, zero, err
}

// Extents reports base:allocation: data anywhere in the chain is 0, zero
// clusters and unallocated ranges are a hole that reads as zeroes, as
// qemu-nbd reports them.
func (img *Image) Extents(ctx context.Context, off, length int64) ([]export.Extent, error) {
	return img.extents(ctx, off, length, func(_ int, zero bool) uint32 {
		if zero {
			return proto.StateHole | proto.StateZero
		}
		return 0
	})
}

// AllocationDepth reports qemu:allocation-depth: 0 unallocated in the
// chain, 1 this image, 2 its backing file, and so on.
func (img *Image) AllocationDepth(ctx context.Context, off, length int64) ([]export.Extent, error) {
	return img.extents(ctx, off, length, func(depth int, _ bool) uint32 {
		return uint32(depth)
	})
}

func (img *Image) extents(ctx context.Context, off, length int64, flags func(int, bool) uint32) ([]export.Extent, error) {
	if err := img.checkRange(off, length); err != nil {
		return nil, err
	}
	var out []export.Extent
	for length > 0 && len(out) < maxExtents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, depth, zero, err := img.status(off, length)
		if err != nil {
			return nil, err
		}
		f := flags(depth, zero)
		if k := len(out); k > 0 && out[k-1].Flags == f {
			out[k-1].Length += n
		} else {
			out = append(out, export.Extent{Length: n, Flags: f})
		}
		off += n
		length -= n
	}
	return out, nil
}
