package nbd

import (
	"crypto/tls"
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

// testWire is a raw-socket NBD client for the server tests: it sends
// exactly the bytes a test gives it and decodes the server's replies.
type testWire struct {
	t    testing.TB
	conn net.Conn
}

// wireTimeout bounds every read and write of a test so a server bug
// fails the test instead of hanging it.
const wireTimeout = 20 * time.Second

// dialWire starts a server for cfg on a loopback listener and connects
// to it without negotiating.
func dialWire(t *testing.T, cfg ServerConfig) (*testWire, *Server) {
	t.Helper()
	l, _ := listenTCP(t)
	s := startServer(t, cfg, l)
	conn, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return &testWire{t: t, conn: conn}, s
}

func (w *testWire) write(b []byte) {
	w.t.Helper()
	require.NoError(w.t, w.conn.SetWriteDeadline(time.Now().Add(wireTimeout)))
	_, err := w.conn.Write(b)
	require.NoError(w.t, err)
}

func (w *testWire) read(n int) []byte {
	w.t.Helper()
	require.NoError(w.t, w.conn.SetReadDeadline(time.Now().Add(wireTimeout)))
	b := make([]byte, n)
	_, err := io.ReadFull(w.conn, b)
	require.NoError(w.t, err)
	return b
}

// greet reads the server greeting and sends client flags.
func (w *testWire) greet(flags uint32) {
	w.t.Helper()
	g := w.read(18)
	require.Equal(w.t, proto.NBDMagic, binary.BigEndian.Uint64(g[0:8]))
	require.Equal(w.t, proto.IHaveOpt, binary.BigEndian.Uint64(g[8:16]))
	require.Equal(w.t, proto.FlagFixedNewstyle|proto.FlagNoZeroes, binary.BigEndian.Uint16(g[16:18]))
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], flags)
	w.write(b[:])
}

func (w *testWire) greetDefault() {
	w.greet(proto.ClientFlagFixedNewstyle | proto.ClientFlagNoZeroes)
}

func optionBytes(opt proto.Option, data []byte) []byte {
	b := make([]byte, proto.OptionHeaderSize, proto.OptionHeaderSize+len(data))
	proto.OptionHeader{Option: opt, Length: uint32(len(data))}.Encode(b)
	return append(b, data...)
}

func (w *testWire) sendOption(opt proto.Option, data []byte) {
	w.t.Helper()
	w.write(optionBytes(opt, data))
}

// readReply reads one option reply.
func (w *testWire) readReply() (proto.OptionReplyHeader, []byte) {
	w.t.Helper()
	h, err := proto.DecodeOptionReplyHeader(w.read(proto.OptionReplyHeaderSize))
	require.NoError(w.t, err)
	require.LessOrEqual(w.t, h.Length, uint32(1<<20), "reply length")
	return h, w.read(int(h.Length))
}

// expectReply reads one option reply and checks its option and type.
func (w *testWire) expectReply(opt proto.Option, rep proto.Reply) []byte {
	w.t.Helper()
	h, data := w.readReply()
	require.Equal(w.t, opt, h.Option, "reply option")
	require.Equal(w.t, rep.String(), h.Reply.String(), "reply type (message %q)", data)
	return data
}

// expectClosed checks that the server closes the connection without
// sending anything more.
func (w *testWire) expectClosed() {
	w.t.Helper()
	require.NoError(w.t, w.conn.SetReadDeadline(time.Now().Add(wireTimeout)))
	b, err := io.ReadAll(w.conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		w.t.Fatalf("server did not close the connection within %s", wireTimeout)
	}
	assert.Empty(w.t, b, "bytes sent before closing")
}

// infoData encodes NBD_OPT_INFO/NBD_OPT_GO data.
func infoData(name string, infos ...proto.Info) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, uint16(i))
	}
	return b
}

// metaData encodes NBD_OPT_LIST/SET_META_CONTEXT data.
func metaData(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// goExport sends NBD_OPT_GO for name and returns the export size and
// transmission flags.
func (w *testWire) goExport(name string) (uint64, proto.TransmissionFlags) {
	w.t.Helper()
	w.sendOption(proto.OptGo, infoData(name))
	var size uint64
	var flags proto.TransmissionFlags
	for {
		h, data := w.readReply()
		require.Equal(w.t, proto.OptGo, h.Option)
		if h.Reply == proto.RepAck {
			return size, flags
		}
		require.Equal(w.t, proto.RepInfo.String(), h.Reply.String(), "reply %q", data)
		if proto.Info(binary.BigEndian.Uint16(data)) == proto.InfoExport {
			size = binary.BigEndian.Uint64(data[2:10])
			flags = proto.TransmissionFlags(binary.BigEndian.Uint16(data[10:12]))
		}
	}
}

// negotiate runs greeting, optional structured replies and meta contexts,
// and NBD_OPT_GO for the export named "".
func (w *testWire) negotiate(structured bool, contexts ...string) (uint64, proto.TransmissionFlags) {
	w.t.Helper()
	w.greetDefault()
	if structured {
		w.sendOption(proto.OptStructuredReply, nil)
		w.expectReply(proto.OptStructuredReply, proto.RepAck)
	}
	if len(contexts) > 0 {
		w.sendOption(proto.OptSetMetaContext, metaData("", contexts...))
		for range contexts {
			w.expectReply(proto.OptSetMetaContext, proto.RepMetaContext)
		}
		w.expectReply(proto.OptSetMetaContext, proto.RepAck)
	}
	return w.goExport("")
}

// startTLS sends NBD_OPT_STARTTLS and runs the client handshake.
func (w *testWire) startTLS(cfg *tls.Config) {
	w.t.Helper()
	w.sendOption(proto.OptStartTLS, nil)
	w.expectReply(proto.OptStartTLS, proto.RepAck)
	c := tls.Client(w.conn, cfg)
	require.NoError(w.t, c.SetDeadline(time.Now().Add(wireTimeout)))
	require.NoError(w.t, c.Handshake())
	w.conn = c
}

func requestBytes(cmd proto.Command, flags proto.CommandFlags, cookie, offset uint64, length uint32, payload []byte) []byte {
	r := proto.Request{Flags: flags, Command: cmd, Cookie: cookie, Offset: offset, Length: length}
	b := make([]byte, proto.RequestHeaderSize, proto.RequestHeaderSize+len(payload))
	r.Encode(b)
	return append(b, payload...)
}

func (w *testWire) request(cmd proto.Command, flags proto.CommandFlags, cookie, offset uint64, length uint32, payload []byte) {
	w.t.Helper()
	w.write(requestBytes(cmd, flags, cookie, offset, length, payload))
}

// testReply is one decoded reply: a simple reply or one structured chunk.
type testReply struct {
	simple bool
	errno  proto.Errno
	cookie uint64
	chunk  proto.ChunkHeader
	data   []byte // payload of a chunk, or read data of a simple reply
}

// readReply reads a simple reply, with dataLen bytes of data when it
// succeeds, or one structured chunk.
func (w *testWire) readTransmissionReply(dataLen int) testReply {
	w.t.Helper()
	magic := binary.BigEndian.Uint32(w.read(4))
	switch magic {
	case proto.SimpleReplyMagic:
		b := w.read(12)
		r := testReply{simple: true, errno: proto.Errno(binary.BigEndian.Uint32(b[0:4])), cookie: binary.BigEndian.Uint64(b[4:12])}
		if r.errno == 0 && dataLen > 0 {
			r.data = w.read(dataLen)
		}
		return r
	case proto.StructuredReplyMagic:
		h, err := proto.DecodeChunkHeader(w.read(16))
		require.NoError(w.t, err)
		require.LessOrEqual(w.t, h.Length, uint32(64<<20))
		r := testReply{chunk: h, cookie: h.Cookie, data: w.read(int(h.Length))}
		if h.Type.IsError() {
			r.errno = proto.Errno(binary.BigEndian.Uint32(r.data[0:4]))
		}
		return r
	}
	w.t.Fatalf("reply magic %#x is neither simple nor structured", magic)
	return testReply{}
}

// expectErrno reads one reply for cookie and checks its error.
func (w *testWire) expectErrno(cookie uint64, errno proto.Errno) testReply {
	w.t.Helper()
	r := w.readTransmissionReply(0)
	require.Equal(w.t, cookie, r.cookie, "cookie")
	require.Equal(w.t, errno.String(), r.errno.String(), "errno (chunk %+v, data %q)", r.chunk, r.data)
	return r
}
