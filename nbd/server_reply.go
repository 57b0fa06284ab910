package nbd

import (
	"encoding/binary"
	"os"
	"slices"
	"sync"

	"github.com/gonbd/gonbd/nbd/proto"
)

// serverRequest carries one request from the reader, through a worker
// unless the reader serves it itself, to the reply writer. It is pooled
// and its payload buffer is reused, so the data path does not allocate
// per request.
type serverRequest struct {
	req proto.Request

	// errno, when set by the reader's checks, is the reply without
	// calling the backend; message explains it in structured replies.
	errno   proto.Errno
	message string

	payload []byte // write data in, read data out: buf after the headroom
	buf     []byte // from payloadBuffers, replyHeadroom bytes and payload
	budget  int64  // bytes held from the connection's payload budget

	// The reply: segments refer to scratch (headers) or to payload data.
	scratch  []byte
	segments []replySegment
	status   []uint32 // block status descriptors under construction
}

// replySegment is one piece of a reply: fileLen bytes of file at filePos
// when file is set, data when non-nil, otherwise scratch[start:end].
type replySegment struct {
	start, end int
	data       []byte
	file       *os.File
	filePos    int64
	fileLen    int
}

var serverRequestPool = sync.Pool{New: func() any { return new(serverRequest) }}

func getServerRequest() *serverRequest {
	return serverRequestPool.Get().(*serverRequest)
}

// putServerRequest returns r to the pool. The caller must have released
// r's payload and budget.
func putServerRequest(r *serverRequest) {
	r.req = proto.Request{}
	r.errno, r.message = 0, ""
	r.payload, r.buf, r.budget = nil, nil, 0
	r.scratch = r.scratch[:0]
	r.segments = r.segments[:0]
	r.status = r.status[:0]
	// Keep huge scratch buffers (block status replies can reach 1 MiB)
	// out of the pool.
	if cap(r.scratch) > 64<<10 {
		r.scratch = nil
	}
	if cap(r.status) > 16<<10 {
		r.status = nil
	}
	serverRequestPool.Put(r)
}

// reserve appends n bytes to the reply and returns them to be filled
// before the next reserve call.
func (r *serverRequest) reserve(n int) []byte {
	start := len(r.scratch)
	r.scratch = slices.Grow(r.scratch, n)[:start+n]
	r.segments = append(r.segments, replySegment{start: start, end: start + n})
	return r.scratch[start : start+n]
}

// appendData appends payload bytes to the reply without copying them.
func (r *serverRequest) appendData(b []byte) {
	if len(b) > 0 {
		r.segments = append(r.segments, replySegment{data: b})
	}
}

// appendFile appends n bytes of f at pos to the reply; the writer sends
// them with sendfile.
func (r *serverRequest) appendFile(f *os.File, pos int64, n int) {
	r.segments = append(r.segments, replySegment{file: f, filePos: pos, fileLen: n})
}

// resetReply drops a reply under construction, such as a partial read
// that failed.
func (r *serverRequest) resetReply() {
	r.scratch = r.scratch[:0]
	r.segments = r.segments[:0]
}

// Simple and structured reply builders. Each appends a complete reply.

func (r *serverRequest) simpleReply(errno proto.Errno) {
	proto.EncodeSimpleReply(r.reserve(proto.SimpleReplyHeaderSize), r.req.Cookie, errno)
}

func (r *serverRequest) chunkHeader(b []byte, flags uint16, typ proto.ReplyType, length int) {
	proto.ChunkHeader{Flags: flags, Type: typ, Cookie: r.req.Cookie, Length: uint32(length)}.Encode(b)
}

// errorChunk appends an NBD_REPLY_TYPE_ERROR chunk that ends the reply.
func (r *serverRequest) errorChunk(errno proto.Errno, message string) {
	message = message[:min(len(message), maxStringLen)]
	b := r.reserve(proto.StructuredReplyHeaderSize + 6 + len(message))
	r.chunkHeader(b, proto.ReplyFlagDone, proto.ReplyTypeError, 6+len(message))
	p := b[proto.StructuredReplyHeaderSize:]
	binary.BigEndian.PutUint32(p[0:4], uint32(errno))
	binary.BigEndian.PutUint16(p[4:6], uint16(len(message)))
	copy(p[6:], message)
}

// noneChunk appends the NBD_REPLY_TYPE_NONE chunk that ends a reply.
func (r *serverRequest) noneChunk() {
	r.chunkHeader(r.reserve(proto.StructuredReplyHeaderSize), proto.ReplyFlagDone, proto.ReplyTypeNone, 0)
}

// dataChunk appends an NBD_REPLY_TYPE_OFFSET_DATA chunk for data read at
// offset.
func (r *serverRequest) dataChunk(flags uint16, offset uint64, data []byte) {
	r.dataChunkHeader(flags, offset, len(data))
	r.appendData(data)
}

// dataChunkHeader appends the header of an NBD_REPLY_TYPE_OFFSET_DATA
// chunk of n data bytes, which the caller appends next.
func (r *serverRequest) dataChunkHeader(flags uint16, offset uint64, n int) {
	b := r.reserve(proto.StructuredReplyHeaderSize + 8)
	r.chunkHeader(b, flags, proto.ReplyTypeOffsetData, 8+n)
	binary.BigEndian.PutUint64(b[proto.StructuredReplyHeaderSize:], offset)
}

// holeChunk appends an NBD_REPLY_TYPE_OFFSET_HOLE chunk.
func (r *serverRequest) holeChunk(flags uint16, offset uint64, length uint32) {
	b := r.reserve(proto.StructuredReplyHeaderSize + 12)
	r.chunkHeader(b, flags, proto.ReplyTypeOffsetHole, 12)
	binary.BigEndian.PutUint64(b[proto.StructuredReplyHeaderSize:], offset)
	binary.BigEndian.PutUint32(b[proto.StructuredReplyHeaderSize+8:], length)
}
