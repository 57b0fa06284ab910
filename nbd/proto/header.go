package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Header sizes on the wire, in bytes.
const (
	OptionHeaderSize          = 16 // IHAVEOPT, option, length
	OptionReplyHeaderSize     = 20 // magic, option, reply type, length
	RequestHeaderSize         = 28 // magic, flags, type, cookie, offset, length
	SimpleReplyHeaderSize     = 16 // magic, error, cookie
	StructuredReplyHeaderSize = 20 // magic, flags, type, cookie, length
)

// ErrBadMagic reports a header whose magic number is wrong. It always ends
// the connection, because the stream can no longer be framed.
var ErrBadMagic = errors.New("nbd: bad magic")

// OptionHeader is the fixed part of a client option request.
type OptionHeader struct {
	Option Option
	Length uint32
}

// DecodeOptionHeader decodes b, which must hold OptionHeaderSize bytes.
func DecodeOptionHeader(b []byte) (OptionHeader, error) {
	if len(b) < OptionHeaderSize {
		return OptionHeader{}, fmt.Errorf("nbd: option header is %d bytes, want %d", len(b), OptionHeaderSize)
	}
	if m := binary.BigEndian.Uint64(b[0:8]); m != IHaveOpt {
		return OptionHeader{}, fmt.Errorf("%w: option magic %#x", ErrBadMagic, m)
	}
	return OptionHeader{
		Option: Option(binary.BigEndian.Uint32(b[8:12])),
		Length: binary.BigEndian.Uint32(b[12:16]),
	}, nil
}

// Encode writes h into b[:OptionHeaderSize] and returns that slice.
func (h OptionHeader) Encode(b []byte) []byte {
	b = b[:OptionHeaderSize]
	binary.BigEndian.PutUint64(b[0:8], IHaveOpt)
	binary.BigEndian.PutUint32(b[8:12], uint32(h.Option))
	binary.BigEndian.PutUint32(b[12:16], h.Length)
	return b
}

// OptionReplyHeader is the fixed part of a server option reply.
type OptionReplyHeader struct {
	Option Option
	Reply  Reply
	Length uint32
}

// DecodeOptionReplyHeader decodes b, which must hold OptionReplyHeaderSize
// bytes.
func DecodeOptionReplyHeader(b []byte) (OptionReplyHeader, error) {
	if len(b) < OptionReplyHeaderSize {
		return OptionReplyHeader{}, fmt.Errorf("nbd: option reply header is %d bytes, want %d", len(b), OptionReplyHeaderSize)
	}
	if m := binary.BigEndian.Uint64(b[0:8]); m != OptReplyMagic {
		return OptionReplyHeader{}, fmt.Errorf("%w: option reply magic %#x", ErrBadMagic, m)
	}
	return OptionReplyHeader{
		Option: Option(binary.BigEndian.Uint32(b[8:12])),
		Reply:  Reply(binary.BigEndian.Uint32(b[12:16])),
		Length: binary.BigEndian.Uint32(b[16:20]),
	}, nil
}

// Encode writes h into b[:OptionReplyHeaderSize] and returns that slice.
func (h OptionReplyHeader) Encode(b []byte) []byte {
	b = b[:OptionReplyHeaderSize]
	binary.BigEndian.PutUint64(b[0:8], OptReplyMagic)
	binary.BigEndian.PutUint32(b[8:12], uint32(h.Option))
	binary.BigEndian.PutUint32(b[12:16], uint32(h.Reply))
	binary.BigEndian.PutUint32(b[16:20], h.Length)
	return b
}

// Request is a transmission-phase request header (compact form).
type Request struct {
	Flags   CommandFlags
	Command Command
	Cookie  uint64
	Offset  uint64
	Length  uint32
}

// DecodeRequest decodes b, which must hold RequestHeaderSize bytes, into r.
// It fills r in place so the caller can reuse one Request per connection.
func DecodeRequest(b []byte, r *Request) error {
	if len(b) < RequestHeaderSize {
		return fmt.Errorf("nbd: request header is %d bytes, want %d", len(b), RequestHeaderSize)
	}
	if m := binary.BigEndian.Uint32(b[0:4]); m != RequestMagic {
		return fmt.Errorf("%w: request magic %#x", ErrBadMagic, m)
	}
	r.Flags = CommandFlags(binary.BigEndian.Uint16(b[4:6]))
	r.Command = Command(binary.BigEndian.Uint16(b[6:8]))
	r.Cookie = binary.BigEndian.Uint64(b[8:16])
	r.Offset = binary.BigEndian.Uint64(b[16:24])
	r.Length = binary.BigEndian.Uint32(b[24:28])
	return nil
}

// Encode writes r into b[:RequestHeaderSize] and returns that slice.
func (r *Request) Encode(b []byte) []byte {
	b = b[:RequestHeaderSize]
	binary.BigEndian.PutUint32(b[0:4], RequestMagic)
	binary.BigEndian.PutUint16(b[4:6], uint16(r.Flags))
	binary.BigEndian.PutUint16(b[6:8], uint16(r.Command))
	binary.BigEndian.PutUint64(b[8:16], r.Cookie)
	binary.BigEndian.PutUint64(b[16:24], r.Offset)
	binary.BigEndian.PutUint32(b[24:28], r.Length)
	return b
}

// EncodeSimpleReply writes a simple reply header into b[:SimpleReplyHeaderSize]
// and returns that slice.
func EncodeSimpleReply(b []byte, cookie uint64, errno Errno) []byte {
	b = b[:SimpleReplyHeaderSize]
	binary.BigEndian.PutUint32(b[0:4], SimpleReplyMagic)
	binary.BigEndian.PutUint32(b[4:8], uint32(errno))
	binary.BigEndian.PutUint64(b[8:16], cookie)
	return b
}

// ChunkHeader is the header of one structured reply chunk.
type ChunkHeader struct {
	Flags  uint16
	Type   ReplyType
	Cookie uint64
	Length uint32
}

// Encode writes h into b[:StructuredReplyHeaderSize] and returns that slice.
func (h ChunkHeader) Encode(b []byte) []byte {
	b = b[:StructuredReplyHeaderSize]
	binary.BigEndian.PutUint32(b[0:4], StructuredReplyMagic)
	binary.BigEndian.PutUint16(b[4:6], h.Flags)
	binary.BigEndian.PutUint16(b[6:8], uint16(h.Type))
	binary.BigEndian.PutUint64(b[8:16], h.Cookie)
	binary.BigEndian.PutUint32(b[16:20], h.Length)
	return b
}

// DecodeChunkHeader decodes the 16 bytes that follow a structured reply's
// magic number (flags, type, cookie, length). The client reads the 4-byte
// magic first to tell simple replies from structured ones.
func DecodeChunkHeader(b []byte) (ChunkHeader, error) {
	if len(b) < StructuredReplyHeaderSize-4 {
		return ChunkHeader{}, fmt.Errorf("nbd: chunk header is %d bytes, want %d", len(b), StructuredReplyHeaderSize-4)
	}
	return ChunkHeader{
		Flags:  binary.BigEndian.Uint16(b[0:2]),
		Type:   ReplyType(binary.BigEndian.Uint16(b[2:4])),
		Cookie: binary.BigEndian.Uint64(b[4:12]),
		Length: binary.BigEndian.Uint32(b[12:16]),
	}, nil
}
