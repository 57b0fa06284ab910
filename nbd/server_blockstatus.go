package nbd

import (
	"encoding/binary"
	"errors"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
)

const (
	// maxStatusDescriptors caps the descriptors in one block status
	// chunk at 1 MiB of descriptors, the cap qemu-nbd uses. The protocol
	// recommends no more than 2^20.
	maxStatusDescriptors = (1 << 20) / 8
	// maxDescriptorLength is the largest 512-aligned descriptor length
	// that fits the 32-bit field.
	maxDescriptorLength = 0xffffffff &^ 511
	// maxSparseRuns caps the chunks of one sparse read; a more
	// fragmented range is sent as one data chunk.
	maxSparseRuns = 64
)

var errNoExtents = errors.New("backend reported no extents for the range")

// cmdBlockStatus builds one NBD_REPLY_TYPE_BLOCK_STATUS chunk per selected
// meta context; the last one ends the reply.
func (t *transmission) cmdBlockStatus(r *serverRequest) error {
	off, length := int64(r.req.Offset), int64(r.req.Length)
	remaining := 0
	if t.meta.baseAllocation {
		remaining++
	}
	if t.meta.allocationDepth {
		remaining++
	}

	if t.meta.baseAllocation {
		var exts []export.Extent
		if t.extenter != nil {
			var err error
			if exts, err = t.extenter.Extents(t.ctx, off, length); err != nil {
				return err
			}
		} else {
			// Without extents every byte is data.
			exts = []export.Extent{{Length: length}}
		}
		remaining--
		if err := t.statusChunk(r, metaIDBaseAllocation, exts, remaining == 0); err != nil {
			return err
		}
	}
	if t.meta.allocationDepth {
		exts, err := t.depth.AllocationDepth(t.ctx, off, length)
		if err != nil {
			return err
		}
		remaining--
		if err := t.statusChunk(r, metaIDAllocationDepth, exts, remaining == 0); err != nil {
			return err
		}
	}
	return nil
}

// statusChunk appends a block status chunk for exts, which start at the
// request offset. Descriptors stop at the end of the export, once the
// request length is covered, and after one with REQ_ONE, which also
// limits that one to the request length. Neighbours with equal flags are
// merged.
func (t *transmission) statusChunk(r *serverRequest, id uint32, exts []export.Extent, last bool) error {
	reqOne := r.req.Flags&proto.CmdFlagReqOne != 0
	pos := r.req.Offset
	end := pos + uint64(r.req.Length)
	r.status = r.status[:0]

	for _, e := range exts {
		if e.Length <= 0 || pos >= t.size || pos >= end {
			break
		}
		n := min(uint64(e.Length), t.size-pos)
		if reqOne {
			n = min(n, end-pos)
		}
		k := len(r.status)
		if k > 0 && r.status[k-1] == e.Flags && uint64(r.status[k-2])+n <= maxDescriptorLength {
			r.status[k-2] += uint32(n)
		} else {
			if k/2 == maxStatusDescriptors {
				break
			}
			n = min(n, maxDescriptorLength)
			r.status = append(r.status, uint32(n), e.Flags)
		}
		pos += n
		if reqOne {
			break
		}
	}
	if len(r.status) == 0 {
		return errNoExtents
	}

	b := r.reserve(proto.StructuredReplyHeaderSize + 4 + 4*len(r.status))
	var flags uint16
	if last {
		flags = proto.ReplyFlagDone
	}
	r.chunkHeader(b, flags, proto.ReplyTypeBlockStatus, 4+4*len(r.status))
	p := b[proto.StructuredReplyHeaderSize:]
	binary.BigEndian.PutUint32(p, id)
	for i, v := range r.status {
		binary.BigEndian.PutUint32(p[4+4*i:], v)
	}
	return nil
}

// readSparse replies to a structured read with NBD_REPLY_TYPE_OFFSET_HOLE
// chunks for ranges the backend reports as reading zero, and data chunks
// for the rest. It returns false, and builds nothing, when the range has
// no zero extents, is too fragmented, or the extents are unavailable; the
// caller then reads the whole range.
func (t *transmission) readSparse(r *serverRequest) (bool, error) {
	off, n := r.req.Offset, uint64(r.req.Length)
	exts, err := t.extenter.Extents(t.ctx, int64(off), int64(n))
	if err != nil {
		return false, nil
	}

	// Runs are (length, zero) pairs in r.status.
	r.status = r.status[:0]
	var covered uint64
	zeroes := false
	for _, e := range exts {
		if e.Length <= 0 || covered >= n {
			break
		}
		l := min(uint64(e.Length), n-covered)
		zero := e.Flags & proto.StateZero
		zeroes = zeroes || zero != 0
		if k := len(r.status); k > 0 && r.status[k-1] == zero {
			r.status[k-2] += uint32(l)
		} else {
			r.status = append(r.status, uint32(l), zero)
		}
		covered += l
	}
	if covered < n {
		if k := len(r.status); k > 0 && r.status[k-1] == 0 {
			r.status[k-2] += uint32(n - covered)
		} else {
			r.status = append(r.status, uint32(n-covered), 0)
		}
	}
	if !zeroes || len(r.status)/2 > maxSparseRuns {
		return false, nil
	}

	t.acquirePayload(r, int(n))
	data := r.payload[:n]
	pos := uint64(0)
	for i := 0; i < len(r.status); i += 2 {
		l := uint64(r.status[i])
		if r.status[i+1] == 0 {
			if err := readFullAt(t.backend, data[pos:pos+l], int64(off+pos)); err != nil {
				return true, err
			}
		}
		pos += l
	}

	pos = 0
	for i := 0; i < len(r.status); i += 2 {
		l := uint64(r.status[i])
		var flags uint16
		if i+2 == len(r.status) {
			flags = proto.ReplyFlagDone
		}
		if r.status[i+1] != 0 {
			r.holeChunk(flags, off+pos, uint32(l))
		} else {
			r.dataChunk(flags, off+pos, data[pos:pos+l])
		}
		pos += l
	}
	return true, nil
}
