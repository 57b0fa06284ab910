package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tests in this file feed a hostile server's byte stream to the
// client over net.Pipe. They check the client's parsing of untrusted
// bytes; interoperability with real servers is in integration/.

// fuzzExportSize is the export size the transmission tests announce.
const fuzzExportSize = 1 << 20

// fuzzRequests are the requests runTransmission sends, in cookie order
// (cookies start at 1), and the bytes they put on the wire.
var fuzzRequests = []struct {
	cmd     proto.Command
	offset  uint64
	length  uint32
	payload int
}{
	{proto.CmdRead, 0, 4096, 0},
	{proto.CmdBlockStatus, 0, 65536, 0},
	{proto.CmdWrite, 0, 512, 512},
	{proto.CmdFlush, 0, 0, 0},
	{proto.CmdRead, 8192, 100, 0},
}

// runTransmission sends fuzzRequests on a fresh Client with structured
// replies and base:allocation as context ID 1, sends replies as the
// server, and returns each request's error.
func runTransmission(t *testing.T, replies []byte) []error {
	clientConn, serverConn := net.Pipe()
	serverDone := make(chan struct{})
	go func() {
		defer close(serverDone)
		defer serverConn.Close()
		want := 0
		for _, r := range fuzzRequests {
			want += proto.RequestHeaderSize + r.payload
		}
		if _, err := io.CopyN(io.Discard, serverConn, int64(want)); err != nil {
			return
		}
		_, _ = serverConn.Write(replies)
	}()

	n := &Negotiation{conn: clientConn, cfg: newClientConfig(nil), protocol: "newstyle-fixed", structured: true}
	n.log = n.cfg.logger
	info := &ExportInfo{Size: fuzzExportSize, Flags: proto.FlagHasFlags | proto.FlagSendFlush}
	c := newClient(n, info, []metaContext{{id: 1, name: proto.ContextBaseAllocation}})

	reqs := make([]*clientRequest, len(fuzzRequests))
	for i, r := range fuzzRequests {
		req := &clientRequest{cmd: r.cmd, offset: r.offset, length: r.length}
		var payload []byte
		switch r.cmd {
		case proto.CmdRead:
			req.buf = make([]byte, r.length)
		case proto.CmdWrite:
			payload = make([]byte, r.payload)
		case proto.CmdBlockStatus:
			req.context = 1
		}
		reqs[i] = req
		if err := c.start(req, 0, payload); err != nil {
			reqs[i] = nil
		}
	}
	errs := make([]error, len(reqs))
	for i, req := range reqs {
		if req != nil {
			errs[i] = c.wait(req)
		}
	}
	require.NoError(t, c.Close())
	<-serverDone
	return errs
}

// runNegotiation runs every negotiation step against a server that sends
// stream, and returns what Go reports about the export (nil if Go fails).
// Transmission is left to runTransmission: here the reader goroutine could
// see replies before the requests they belong to.
func runNegotiation(t *testing.T, stream []byte) *ExportInfo {
	clientConn, serverConn := net.Pipe()
	serverDone := make(chan struct{})
	go func() {
		defer close(serverDone)
		go func() { _, _ = io.Copy(io.Discard, serverConn) }()
		_, _ = serverConn.Write(stream)
		serverConn.Close()
	}()
	defer func() {
		clientConn.Close()
		<-serverDone
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := negotiateConn(ctx, clientConn, "fuzz", newClientConfig(nil))
	if err != nil {
		return nil
	}
	_, _ = n.List(ctx)
	_, _ = n.Info(ctx, "")
	_, _ = n.ListMetaContexts(ctx, "")
	_, _ = n.ListExports(ctx)
	c, err := n.Go(ctx, "")
	if err != nil {
		return nil
	}
	info := c.Info()
	require.NoError(t, c.Close())
	return &info
}

// Encoders for test streams.

func simpleReply(cookie uint64, errno proto.Errno, data []byte) []byte {
	b := proto.EncodeSimpleReply(make([]byte, proto.SimpleReplyHeaderSize), cookie, errno)
	return append(b, data...)
}

func chunk(cookie uint64, flags uint16, typ proto.ReplyType, payload []byte) []byte {
	h := proto.ChunkHeader{Flags: flags, Type: typ, Cookie: cookie, Length: uint32(len(payload))}
	b := h.Encode(make([]byte, proto.StructuredReplyHeaderSize))
	return append(b, payload...)
}

func offsetData(cookie uint64, flags uint16, offset uint64, data []byte) []byte {
	p := binary.BigEndian.AppendUint64(nil, offset)
	return chunk(cookie, flags, proto.ReplyTypeOffsetData, append(p, data...))
}

func offsetHole(cookie uint64, flags uint16, offset uint64, size uint32) []byte {
	p := binary.BigEndian.AppendUint64(nil, offset)
	return chunk(cookie, flags, proto.ReplyTypeOffsetHole, binary.BigEndian.AppendUint32(p, size))
}

func blockStatus(cookie uint64, flags uint16, id uint32, extents ...uint32) []byte {
	p := binary.BigEndian.AppendUint32(nil, id)
	for _, e := range extents {
		p = binary.BigEndian.AppendUint32(p, e)
	}
	return chunk(cookie, flags, proto.ReplyTypeBlockStatus, p)
}

func errorChunk(cookie uint64, errno proto.Errno, msg string) []byte {
	p := binary.BigEndian.AppendUint32(nil, uint32(errno))
	p = binary.BigEndian.AppendUint16(p, uint16(len(msg)))
	return chunk(cookie, proto.ReplyFlagDone, proto.ReplyTypeError, append(p, msg...))
}

func none(cookie uint64) []byte { return chunk(cookie, proto.ReplyFlagDone, proto.ReplyTypeNone, nil) }

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// goodReplies replies to fuzzRequests correctly, out of order.
func goodReplies() []byte {
	return concat(
		simpleReply(4, 0, nil),
		offsetData(1, 0, 2048, make([]byte, 2048)),
		blockStatus(2, proto.ReplyFlagDone, 1, 4096, 0, 61440, 3),
		offsetHole(1, 0, 0, 2048),
		none(1),
		errorChunk(3, proto.ENOSPC, "disk full"),
		simpleReply(5, 0, make([]byte, 100)),
	)
}

// greeting is a fixed newstyle server greeting.
func greeting() []byte {
	b := binary.BigEndian.AppendUint64(nil, proto.NBDMagic)
	b = binary.BigEndian.AppendUint64(b, proto.IHaveOpt)
	return binary.BigEndian.AppendUint16(b, proto.FlagFixedNewstyle|proto.FlagNoZeroes)
}

func optReply(opt proto.Option, rep proto.Reply, payload []byte) []byte {
	h := proto.OptionReplyHeader{Option: opt, Reply: rep, Length: uint32(len(payload))}
	return append(h.Encode(make([]byte, proto.OptionReplyHeaderSize)), payload...)
}

func infoExport(size uint64, flags proto.TransmissionFlags) []byte {
	p := binary.BigEndian.AppendUint16(nil, uint16(proto.InfoExport))
	p = binary.BigEndian.AppendUint64(p, size)
	return binary.BigEndian.AppendUint16(p, uint16(flags))
}

// goodNegotiation returns the server's replies to runNegotiation's options.
func goodNegotiation() []byte {
	server := binary.BigEndian.AppendUint32(nil, 4)
	server = append(server, "disk"...)
	mc := binary.BigEndian.AppendUint32(nil, 7)
	mc = append(mc, proto.ContextBaseAllocation...)
	flags := proto.FlagHasFlags | proto.FlagSendFlush
	return concat(
		greeting(),
		optReply(proto.OptStructuredReply, proto.RepAck, nil),
		optReply(proto.OptList, proto.RepServer, server),
		optReply(proto.OptList, proto.RepAck, nil),
		optReply(proto.OptInfo, proto.RepInfo, infoExport(4096, flags)),
		optReply(proto.OptInfo, proto.RepAck, nil),
		optReply(proto.OptListMetaContext, proto.RepMetaContext, mc),
		optReply(proto.OptListMetaContext, proto.RepAck, nil),
		optReply(proto.OptList, proto.RepServer, server),
		optReply(proto.OptList, proto.RepAck, nil),
		optReply(proto.OptInfo, proto.RepInfo, infoExport(4096, flags)),
		optReply(proto.OptInfo, proto.RepAck, nil),
		optReply(proto.OptListMetaContext, proto.RepMetaContext, mc),
		optReply(proto.OptListMetaContext, proto.RepAck, nil),
		optReply(proto.OptListMetaContext, proto.RepAck, nil),
		optReply(proto.OptSetMetaContext, proto.RepMetaContext, mc),
		optReply(proto.OptSetMetaContext, proto.RepAck, nil),
		optReply(proto.OptGo, proto.RepInfo, infoExport(4096, flags)),
		optReply(proto.OptGo, proto.RepAck, nil),
	)
}

func TestClientRepliesOutOfOrder(t *testing.T) {
	errs := runTransmission(t, goodReplies())
	assert.NoError(t, errs[0], "read")
	assert.NoError(t, errs[1], "block status")
	var re *RequestError
	require.ErrorAs(t, errs[2], &re, "write")
	assert.Equal(t, proto.ENOSPC, re.Errno)
	assert.Equal(t, "disk full", re.Message)
	assert.NoError(t, errs[3], "flush")
	assert.NoError(t, errs[4], "read with simple reply")
}

func TestClientRepliesProtocolErrors(t *testing.T) {
	tests := []struct {
		name    string
		replies []byte
		errPart string
	}{
		{"UnknownCookie", simpleReply(99, 0, nil), "unknown cookie 99"},
		{"BadMagic", []byte{1, 2, 3, 4}, "neither simple nor structured"},
		{"DataOutsideRequest", offsetData(1, proto.ReplyFlagDone, 8192, []byte{1}), "outside the request"},
		{"HoleTooLong", offsetHole(1, proto.ReplyFlagDone, 0, 4097), "outside the request"},
		{"HoleOfZeroSize", offsetHole(1, proto.ReplyFlagDone, 0, 0), "size 0"},
		{"ReadNotCovered", offsetData(1, proto.ReplyFlagDone, 0, make([]byte, 10)), "covers 10 of 4096"},
		{"DataForBlockStatus", offsetData(2, proto.ReplyFlagDone, 0, []byte{1}), "in reply to NBD_CMD_BLOCK_STATUS"},
		{"UnknownContextID", blockStatus(2, proto.ReplyFlagDone, 9, 4096, 0), "ID 9, which was not negotiated"},
		{"ExtentOfZeroLength", blockStatus(2, proto.ReplyFlagDone, 1, 0, 0), "length 0"},
		{"BlockStatusOddLength", chunk(2, proto.ReplyFlagDone, proto.ReplyTypeBlockStatus, make([]byte, 9)), "multiple of 8"},
		{"BlockStatusHuge", chunk(2, proto.ReplyFlagDone, proto.ReplyTypeBlockStatus, nil)[:proto.StructuredReplyHeaderSize-4], ""},
		{"NoExtents", none(2), "no extents"},
		{"NoneWithoutDone", chunk(4, 0, proto.ReplyTypeNone, nil), "done flag"},
		{"UnknownChunkType", chunk(4, proto.ReplyFlagDone, 77, nil), "unknown reply chunk type"},
		{"ErrorMessageTooLong", chunk(4, proto.ReplyFlagDone, proto.ReplyTypeError, []byte{0, 0, 0, 5, 0, 9}), "message length 9"},
		{"ErrorZero", errorChunk(4, 0, ""), "error 0"},
		{"TruncatedRead", simpleReply(1, 0, make([]byte, 10)), "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := runTransmission(t, tt.replies)
			for i, err := range errs {
				assert.Error(t, err, "request %d", i)
			}
			if tt.errPart != "" {
				joined := errors.Join(errs...)
				assert.Contains(t, joined.Error(), tt.errPart)
			}
		})
	}
}

func TestClientRepliesUnknownErrorType(t *testing.T) {
	p := binary.BigEndian.AppendUint32(nil, uint32(proto.EIO))
	p = binary.BigEndian.AppendUint16(p, 0)
	errs := runTransmission(t, concat(chunk(4, proto.ReplyFlagDone, 0x8000|77, p), simpleReply(3, 0, nil)))
	var re *RequestError
	require.ErrorAs(t, errs[3], &re)
	assert.Equal(t, proto.EIO, re.Errno)
	assert.NoError(t, errs[2], "the connection goes on after an unknown error chunk")
}

func TestNegotiationGoodStream(t *testing.T) {
	info := runNegotiation(t, goodNegotiation())
	require.NotNil(t, info)
	assert.Equal(t, int64(4096), info.Size)
	assert.Equal(t, proto.FlagHasFlags|proto.FlagSendFlush, info.Flags)
}

func TestNegotiationOldstyle(t *testing.T) {
	info := runNegotiation(t, concat(binary.BigEndian.AppendUint64(nil, proto.NBDMagic),
		binary.BigEndian.AppendUint64(nil, proto.OldstyleMagic),
		binary.BigEndian.AppendUint64(nil, 1<<20), make([]byte, 4+124)))
	require.NotNil(t, info)
	assert.Equal(t, int64(1<<20), info.Size)
}

func TestNegotiationHostileStreams(t *testing.T) {
	tests := []struct {
		name   string
		stream []byte
	}{
		{"NotNBD", []byte("HTTP/1.1 200 OK\r\n\r\n")},
		{"HugeOptionReply", concat(greeting(), optReply(proto.OptStructuredReply, proto.RepAck, nil),
			proto.OptionReplyHeader{Option: proto.OptList, Reply: proto.RepServer, Length: 1 << 31}.Encode(make([]byte, 20)))},
		{"WrongOptionInReply", concat(greeting(), optReply(proto.OptGo, proto.RepAck, nil))},
		{"NameLengthPastPayload", concat(greeting(), optReply(proto.OptStructuredReply, proto.RepAck, nil),
			optReply(proto.OptList, proto.RepServer, []byte{0xff, 0xff, 0xff, 0xff, 'a'}))},
		{"SizeAboveInt64", concat(greeting(), optReply(proto.OptStructuredReply, proto.RepAck, nil),
			optReply(proto.OptList, proto.RepAck, nil),
			optReply(proto.OptInfo, proto.RepInfo, infoExport(1<<63, proto.FlagHasFlags)))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Nil(t, runNegotiation(t, tt.stream))
		})
	}
}

func FuzzClientReplies(f *testing.F) {
	f.Add(goodReplies())
	f.Add(goodNegotiation())
	f.Add(concat(offsetData(1, 0, 0, make([]byte, 4096)), none(1), blockStatus(2, proto.ReplyFlagDone, 1, 65536, 0)))
	f.Add(concat(errorChunk(1, proto.EIO, "bad sector"), errorChunk(2, proto.EINVAL, "")))
	f.Fuzz(func(t *testing.T, data []byte) {
		runTransmission(t, data)
		runNegotiation(t, data)
	})
}
