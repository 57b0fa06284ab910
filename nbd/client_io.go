package nbd

import (
	"errors"
	"fmt"
	"io"

	"github.com/gonbd/gonbd/nbd/proto"
)

// ErrReadOnly is returned by writes to a read-only export.
var ErrReadOnly = errors.New("nbd: export is read-only")

// BlockExtent is one run of bytes with the same block status flags. For
// base:allocation, Flags holds proto.StateHole and proto.StateZero.
type BlockExtent struct {
	Offset int64
	Length int64
	Flags  uint32
}

// Request size limits.
const (
	// defaultMaxPayload is the read and write size used when the server
	// names none, and the most the client sends in one request: the
	// protocol document sets 32 MiB as the default.
	defaultMaxPayload = 32 << 20
	// maxRangeRequest is the largest trim, zero or cache request. Lengths
	// are 32-bit on the wire; 2 GiB is a multiple of every valid minimum
	// block size.
	maxRangeRequest = 1 << 31
)

// maxPayload returns the largest read or write to send: the server's
// maximum block size, capped at 32 MiB and rounded down to its minimum.
func (c *Client) maxPayload() int64 {
	maxLen := int64(defaultMaxPayload)
	if c.info.MaxBlock > 0 && int64(c.info.MaxBlock) < maxLen {
		maxLen = int64(c.info.MaxBlock)
	}
	if c.info.MinBlock > 1 {
		maxLen -= maxLen % int64(c.info.MinBlock)
	}
	return maxLen
}

// checkAligned rejects a range the server's minimum block size forbids.
func (c *Client) checkAligned(cmd proto.Command, off, length int64) error {
	minBlock := int64(c.info.MinBlock)
	if minBlock > 1 && (off%minBlock != 0 || length%minBlock != 0) {
		return fmt.Errorf("nbd: %s at offset %d, length %d is not aligned to the server's minimum block size %d", cmd, off, length, minBlock)
	}
	return nil
}

// checkRange rejects a range outside the export.
func (c *Client) checkRange(cmd proto.Command, off, length int64) error {
	if off < 0 || length < 0 || off > c.info.Size || length > c.info.Size-off {
		return fmt.Errorf("nbd: %s at offset %d, length %d lies outside the %d-byte export", cmd, off, length, c.info.Size)
	}
	return c.checkAligned(cmd, off, length)
}

// requireFlag returns an error unless the export advertises flag.
func (c *Client) requireFlag(cmd proto.Command, flag proto.TransmissionFlags, name string) error {
	if !c.info.Has(flag) {
		return fmt.Errorf("nbd: server does not support %s (%s not set)", cmd, name)
	}
	return nil
}

// ReadAt reads len(p) bytes at off, with io.ReaderAt semantics: a read
// that reaches the end of the export returns io.EOF with the bytes before
// it. Reads above the maximum block size are split and pipelined.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("nbd: read at negative offset %d", off)
	}
	if off >= c.info.Size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > c.info.Size-off {
		p = p[:c.info.Size-off]
		eof = io.EOF
	}
	if err := c.checkAligned(proto.CmdRead, off, int64(len(p))); err != nil {
		return 0, err
	}
	if err := c.pieces(proto.CmdRead, 0, off, int64(len(p)), c.maxPayload(), p); err != nil {
		return 0, err
	}
	return len(p), eof
}

// WriteOption qualifies a write.
type WriteOption int

const (
	// WriteFUA makes the write durable before it completes
	// (NBD_CMD_FLAG_FUA).
	WriteFUA WriteOption = iota + 1
)

// WriteAt writes p at off, with io.WriterAt semantics. Writes above the
// maximum block size are split and pipelined.
func (c *Client) WriteAt(p []byte, off int64) (int, error) {
	return c.WriteAtWith(p, off)
}

// WriteAtWith is WriteAt with options.
func (c *Client) WriteAtWith(p []byte, off int64, opts ...WriteOption) (int, error) {
	if c.info.Has(proto.FlagReadOnly) {
		return 0, ErrReadOnly
	}
	if err := c.checkRange(proto.CmdWrite, off, int64(len(p))); err != nil {
		return 0, err
	}
	var flags proto.CommandFlags
	for _, o := range opts {
		if o == WriteFUA {
			if err := c.requireFlag(proto.CmdWrite, proto.FlagSendFUA, "NBD_FLAG_SEND_FUA"); err != nil {
				return 0, err
			}
			flags |= proto.CmdFlagFUA
		}
	}
	if err := c.pieces(proto.CmdWrite, flags, off, int64(len(p)), c.maxPayload(), p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush makes completed writes durable (NBD_CMD_FLUSH).
func (c *Client) Flush() error {
	if err := c.requireFlag(proto.CmdFlush, proto.FlagSendFlush, "NBD_FLAG_SEND_FLUSH"); err != nil {
		return err
	}
	req := &clientRequest{cmd: proto.CmdFlush}
	if err := c.start(req, 0, nil); err != nil {
		return err
	}
	return c.wait(req)
}

// Trim discards a range (NBD_CMD_TRIM); reads of it may return anything
// until it is written again.
func (c *Client) Trim(off, length int64) error {
	if c.info.Has(proto.FlagReadOnly) {
		return ErrReadOnly
	}
	if err := c.requireFlag(proto.CmdTrim, proto.FlagSendTrim, "NBD_FLAG_SEND_TRIM"); err != nil {
		return err
	}
	if err := c.checkRange(proto.CmdTrim, off, length); err != nil {
		return err
	}
	return c.pieces(proto.CmdTrim, 0, off, length, maxRangeRequest, nil)
}

// ZeroOption qualifies a Zero request.
type ZeroOption int

const (
	// ZeroNoHole forbids punching a hole (NBD_CMD_FLAG_NO_HOLE).
	ZeroNoHole ZeroOption = iota + 1
	// ZeroFast fails with ENOTSUP unless zeroing is faster than writing
	// zeroes (NBD_CMD_FLAG_FAST_ZERO).
	ZeroFast
	// ZeroFUA makes the zeroes durable before the request completes.
	ZeroFUA
)

// Zero writes zeroes over a range (NBD_CMD_WRITE_ZEROES).
func (c *Client) Zero(off, length int64, opts ...ZeroOption) error {
	if c.info.Has(proto.FlagReadOnly) {
		return ErrReadOnly
	}
	if err := c.requireFlag(proto.CmdWriteZeroes, proto.FlagSendWriteZeroes, "NBD_FLAG_SEND_WRITE_ZEROES"); err != nil {
		return err
	}
	if err := c.checkRange(proto.CmdWriteZeroes, off, length); err != nil {
		return err
	}
	var flags proto.CommandFlags
	for _, o := range opts {
		switch o {
		case ZeroNoHole:
			flags |= proto.CmdFlagNoHole
		case ZeroFast:
			if err := c.requireFlag(proto.CmdWriteZeroes, proto.FlagSendFastZero, "NBD_FLAG_SEND_FAST_ZERO"); err != nil {
				return err
			}
			flags |= proto.CmdFlagFastZero
		case ZeroFUA:
			if err := c.requireFlag(proto.CmdWriteZeroes, proto.FlagSendFUA, "NBD_FLAG_SEND_FUA"); err != nil {
				return err
			}
			flags |= proto.CmdFlagFUA
		}
	}
	return c.pieces(proto.CmdWriteZeroes, flags, off, length, maxRangeRequest, nil)
}

// Cache requests that the server prefetch a range (NBD_CMD_CACHE).
func (c *Client) Cache(off, length int64) error {
	if err := c.requireFlag(proto.CmdCache, proto.FlagSendCache, "NBD_FLAG_SEND_CACHE"); err != nil {
		return err
	}
	if err := c.checkRange(proto.CmdCache, off, length); err != nil {
		return err
	}
	return c.pieces(proto.CmdCache, 0, off, length, maxRangeRequest, nil)
}

// BlockStatus returns the extents of a meta context (negotiated with
// WithMetaContexts; base:allocation by default) from off. The server may
// describe less than length bytes, or a little more in its last extent,
// so callers that need the whole range request again from the end of the
// last extent. length is capped to what one request carries.
func (c *Client) BlockStatus(off, length int64, context string) ([]BlockExtent, error) {
	id, ok := c.contextIDs[context]
	if !ok {
		return nil, fmt.Errorf("nbd: meta context %q was not negotiated; request it with WithMetaContexts (the server agreed to %q)", context, c.MetaContexts())
	}
	align := int64(c.info.MinBlock)
	if align == 0 {
		align = 512
	}
	if maxLen := int64(1<<32) - align; length > maxLen {
		length = maxLen
	}
	if off+length > c.info.Size && off < c.info.Size {
		length = c.info.Size - off
	}
	if err := c.checkRange(proto.CmdBlockStatus, off, length); err != nil {
		return nil, err
	}
	if length == 0 {
		return nil, nil
	}
	req := &clientRequest{cmd: proto.CmdBlockStatus, offset: uint64(off), length: uint32(length), context: id}
	if err := c.start(req, 0, nil); err != nil {
		return nil, err
	}
	if err := c.wait(req); err != nil {
		return nil, err
	}
	return req.extents, nil
}

// pieces sends cmd over [off, off+length) in requests of at most maxLen
// bytes, all in flight together, and waits for them. buf is the read
// destination or the write payload (nil for other commands).
func (c *Client) pieces(cmd proto.Command, flags proto.CommandFlags, off, length, maxLen int64, buf []byte) error {
	if length == 0 {
		return nil
	}
	var started []*clientRequest
	var firstErr error
	for done := int64(0); done < length; {
		n := min(length-done, maxLen)
		req := &clientRequest{cmd: cmd, offset: uint64(off + done), length: uint32(n)}
		var payload []byte
		switch cmd {
		case proto.CmdRead:
			req.buf = buf[done : done+n]
		case proto.CmdWrite:
			payload = buf[done : done+n]
		}
		if err := c.start(req, flags, payload); err != nil {
			firstErr = err
			break
		}
		started = append(started, req)
		done += n
	}
	for _, req := range started {
		if err := c.wait(req); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}
