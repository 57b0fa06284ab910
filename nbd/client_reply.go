package nbd

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/gonbd/gonbd/nbd/proto"
)

// Limits on reply chunks, so a hostile server cannot make the client
// allocate without bound. Read data goes straight into the caller's
// buffer and is bounded by the request.
const (
	// maxBlockStatusChunk is the largest NBD_REPLY_TYPE_BLOCK_STATUS
	// payload accepted: servers SHOULD NOT send more than 2^20 extents
	// per chunk, per the protocol document.
	maxBlockStatusChunk = 4 + 8<<20
	// maxErrorChunk bounds an error chunk: a 4096-byte message plus the
	// fixed fields.
	maxErrorChunk = 4 + 2 + proto.MaxStringLen + 8
)

// replyDecoder reads replies from the connection and completes the
// matching requests of its Client. Only the reader goroutine uses it.
type replyDecoder struct {
	c       *Client
	r       *bufio.Reader
	hdr     [proto.StructuredReplyHeaderSize]byte
	scratch []byte
}

func newReplyDecoder(c *Client) *replyDecoder {
	return &replyDecoder{c: c, r: bufio.NewReaderSize(c.conn, 64<<10)}
}

// readReply reads one simple reply or one structured reply chunk. An error
// ends the connection.
func (d *replyDecoder) readReply() error {
	if _, err := io.ReadFull(d.r, d.hdr[:4]); err != nil {
		return err
	}
	switch magic := binary.BigEndian.Uint32(d.hdr[:4]); magic {
	case proto.SimpleReplyMagic:
		return d.readSimpleReply()
	case proto.StructuredReplyMagic:
		if !d.c.structured {
			return protocolErrorf("structured reply chunk, but structured replies were not negotiated")
		}
		return d.readChunk()
	default:
		return protocolErrorf("reply magic %#x is neither simple nor structured", magic)
	}
}

func (d *replyDecoder) readSimpleReply() error {
	b := d.hdr[4:proto.SimpleReplyHeaderSize]
	if _, err := io.ReadFull(d.r, b); err != nil {
		return fmt.Errorf("read simple reply: %w", unexpectedEOF(err))
	}
	errno := proto.Errno(binary.BigEndian.Uint32(b[0:4]))
	cookie := binary.BigEndian.Uint64(b[4:12])
	req := d.c.take(cookie)
	if req == nil {
		return protocolErrorf("simple reply for unknown cookie %d", cookie)
	}

	switch {
	case errno != 0:
		req.err = req.requestError(errno, "")
	case req.cmd == proto.CmdRead:
		if _, err := io.ReadFull(d.r, req.buf); err != nil {
			req.err = fmt.Errorf("read %s data: %w", req.cmd, unexpectedEOF(err))
			d.c.complete(req)
			return req.err
		}
	case req.cmd == proto.CmdBlockStatus:
		req.err = protocolErrorf("simple reply without error to %s", req.cmd)
		d.c.complete(req)
		return req.err
	}
	d.c.complete(req)
	return nil
}

func (d *replyDecoder) readChunk() error {
	if _, err := io.ReadFull(d.r, d.hdr[4:proto.StructuredReplyHeaderSize]); err != nil {
		return fmt.Errorf("read reply chunk: %w", unexpectedEOF(err))
	}
	h, err := proto.DecodeChunkHeader(d.hdr[4:proto.StructuredReplyHeaderSize])
	if err != nil {
		return protocolErrorf("%v", err)
	}
	req := d.c.lookup(h.Cookie)
	if req == nil {
		return protocolErrorf("%s chunk for unknown cookie %d", h.Type, h.Cookie)
	}

	switch {
	case h.Type == proto.ReplyTypeNone:
		if h.Length != 0 || h.Flags&proto.ReplyFlagDone == 0 {
			return protocolErrorf("%s chunk with length %d and flags %#x, want length 0 and the done flag", h.Type, h.Length, h.Flags)
		}
	case h.Type == proto.ReplyTypeOffsetData:
		err = d.readOffsetData(req, h)
	case h.Type == proto.ReplyTypeOffsetHole:
		err = d.readOffsetHole(req, h)
	case h.Type == proto.ReplyTypeBlockStatus:
		err = d.readBlockStatus(req, h)
	case h.Type.IsError():
		err = d.readErrorChunk(req, h)
	default:
		err = protocolErrorf("unknown reply chunk type %s", h.Type)
	}
	if err != nil {
		return err
	}

	if h.Flags&proto.ReplyFlagDone != 0 {
		d.c.take(h.Cookie)
		if err := req.checkComplete(); err != nil {
			req.err = err
			d.c.complete(req)
			return err
		}
		d.c.complete(req)
	}
	return nil
}

// readOffsetData reads NBD_REPLY_TYPE_OFFSET_DATA into the read buffer.
func (d *replyDecoder) readOffsetData(req *clientRequest, h proto.ChunkHeader) error {
	if req.cmd != proto.CmdRead {
		return protocolErrorf("%s chunk in reply to %s", h.Type, req.cmd)
	}
	if h.Length < 9 {
		return protocolErrorf("%s chunk of %d bytes, want at least 9", h.Type, h.Length)
	}
	var b [8]byte
	if _, err := io.ReadFull(d.r, b[:]); err != nil {
		return fmt.Errorf("read %s: %w", h.Type, unexpectedEOF(err))
	}
	start, err := req.bufferRange(h.Type, binary.BigEndian.Uint64(b[:]), uint64(h.Length-8))
	if err != nil {
		return err
	}
	if _, err := io.ReadFull(d.r, req.buf[start:start+int(h.Length-8)]); err != nil {
		return fmt.Errorf("read %s data: %w", h.Type, unexpectedEOF(err))
	}
	return nil
}

// readOffsetHole zeroes the part of the read buffer the hole covers.
func (d *replyDecoder) readOffsetHole(req *clientRequest, h proto.ChunkHeader) error {
	if req.cmd != proto.CmdRead {
		return protocolErrorf("%s chunk in reply to %s", h.Type, req.cmd)
	}
	if h.Length != 12 {
		return protocolErrorf("%s chunk of %d bytes, want 12", h.Type, h.Length)
	}
	var b [12]byte
	if _, err := io.ReadFull(d.r, b[:]); err != nil {
		return fmt.Errorf("read %s: %w", h.Type, unexpectedEOF(err))
	}
	size := binary.BigEndian.Uint32(b[8:12])
	if size == 0 {
		return protocolErrorf("%s chunk of size 0", h.Type)
	}
	start, err := req.bufferRange(h.Type, binary.BigEndian.Uint64(b[0:8]), uint64(size))
	if err != nil {
		return err
	}
	clear(req.buf[start : start+int(size)])
	return nil
}

// bufferRange checks that a content chunk lies inside the request and
// returns its start in the read buffer.
//
// NOTE: chunks are counted, not tracked by range, so a server that sends
// overlapping chunks adding up to the request length leaves the rest of the
// buffer as it was.
func (req *clientRequest) bufferRange(typ proto.ReplyType, offset, length uint64) (int, error) {
	end := req.offset + uint64(req.length)
	if offset < req.offset || offset > end || length > end-offset {
		return 0, protocolErrorf("%s chunk at offset %d, length %d lies outside the request at %d, length %d", typ, offset, length, req.offset, req.length)
	}
	req.covered += length
	if req.covered > uint64(req.length) {
		return 0, protocolErrorf("%s chunks cover %d bytes of a %d-byte read", typ, req.covered, req.length)
	}
	return int(offset - req.offset), nil
}

// readBlockStatus reads NBD_REPLY_TYPE_BLOCK_STATUS and keeps the extents
// of the context the request asked for.
func (d *replyDecoder) readBlockStatus(req *clientRequest, h proto.ChunkHeader) error {
	if req.cmd != proto.CmdBlockStatus {
		return protocolErrorf("%s chunk in reply to %s", h.Type, req.cmd)
	}
	if h.Length < 12 || (h.Length-4)%8 != 0 || h.Length > maxBlockStatusChunk {
		return protocolErrorf("%s chunk of %d bytes, want 4 plus a multiple of 8, at most %d", h.Type, h.Length, maxBlockStatusChunk)
	}
	p, err := d.readPayload(h)
	if err != nil {
		return err
	}

	id := binary.BigEndian.Uint32(p[0:4])
	if !d.c.knownContext(id) {
		return protocolErrorf("%s chunk for meta context ID %d, which was not negotiated", h.Type, id)
	}
	if id != req.context {
		return nil
	}
	if req.haveExtents {
		return protocolErrorf("second %s chunk for meta context ID %d", h.Type, id)
	}
	req.haveExtents = true

	offset := int64(req.offset)
	req.extents = make([]BlockExtent, 0, (len(p)-4)/8)
	for b := p[4:]; len(b) >= 8; b = b[8:] {
		length := binary.BigEndian.Uint32(b[0:4])
		if length == 0 {
			return protocolErrorf("%s extent of length 0", h.Type)
		}
		req.extents = append(req.extents, BlockExtent{Offset: offset, Length: int64(length), Flags: binary.BigEndian.Uint32(b[4:8])})
		offset += int64(length)
	}
	return nil
}

// readErrorChunk reads an error chunk and records it as the request's
// error. Unknown error types are errors too, as the protocol requires.
func (d *replyDecoder) readErrorChunk(req *clientRequest, h proto.ChunkHeader) error {
	if h.Length < 6 || h.Length > maxErrorChunk {
		return protocolErrorf("%s chunk of %d bytes, want 6 to %d", h.Type, h.Length, maxErrorChunk)
	}
	p, err := d.readPayload(h)
	if err != nil {
		return err
	}
	errno := proto.Errno(binary.BigEndian.Uint32(p[0:4]))
	msgLen := int(binary.BigEndian.Uint16(p[4:6]))
	if msgLen > len(p)-6 {
		return protocolErrorf("%s message length %d exceeds the %d-byte chunk", h.Type, msgLen, h.Length)
	}
	if errno == 0 {
		return protocolErrorf("%s chunk with error 0", h.Type)
	}
	if h.Type == proto.ReplyTypeErrorOffset {
		if len(p)-6-msgLen != 8 {
			return protocolErrorf("%s chunk of %d bytes with a %d-byte message, want %d", h.Type, h.Length, msgLen, 14+msgLen)
		}
		off := binary.BigEndian.Uint64(p[6+msgLen:])
		if off < req.offset || off-req.offset >= uint64(req.length) {
			return protocolErrorf("%s offset %d lies outside the request at %d, length %d", h.Type, off, req.offset, req.length)
		}
	}
	if req.err == nil {
		req.err = req.requestError(errno, printableMessage(p[6:6+msgLen]))
	}
	return nil
}

// readPayload reads a chunk payload, already checked against its limit,
// into the reusable scratch buffer.
func (d *replyDecoder) readPayload(h proto.ChunkHeader) ([]byte, error) {
	if cap(d.scratch) < int(h.Length) {
		d.scratch = make([]byte, h.Length)
	}
	p := d.scratch[:h.Length]
	if _, err := io.ReadFull(d.r, p); err != nil {
		return nil, fmt.Errorf("read %s chunk: %w", h.Type, unexpectedEOF(err))
	}
	return p, nil
}

// checkComplete checks a request whose final chunk arrived without error.
func (req *clientRequest) checkComplete() error {
	if req.err != nil {
		return nil
	}
	switch req.cmd {
	case proto.CmdRead:
		if req.covered != uint64(req.length) {
			return protocolErrorf("reply to %s covers %d of %d bytes", req.cmd, req.covered, req.length)
		}
	case proto.CmdBlockStatus:
		if !req.haveExtents {
			return protocolErrorf("reply to %s has no extents for the requested meta context", req.cmd)
		}
	}
	return nil
}

func (req *clientRequest) requestError(errno proto.Errno, msg string) *RequestError {
	return &RequestError{Command: req.cmd, Offset: int64(req.offset), Length: int64(req.length), Errno: errno, Message: msg}
}

func (c *Client) knownContext(id uint32) bool {
	for _, known := range c.contextIDs {
		if known == id {
			return true
		}
	}
	return false
}

// unexpectedEOF turns io.EOF inside a reply into io.ErrUnexpectedEOF.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
