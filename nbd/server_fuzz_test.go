package nbd

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/gonbd/gonbd/nbd/proto"
)

// fuzzConn is a net.Conn whose client side is a fixed byte stream:
// reads return the stream then io.EOF, writes are discarded. It lets a
// fuzz target drive a whole connection without sockets or timing.
type fuzzConn struct{ r *bytes.Reader }

func (c *fuzzConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *fuzzConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *fuzzConn) Close() error                { return nil }
func (c *fuzzConn) LocalAddr() net.Addr         { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 10809} }
func (c *fuzzConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }

// serveFuzzStream runs one server connection over stream to completion.
func serveFuzzStream(t *testing.T, cfg ServerConfig, stream []byte) {
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.ServeConn(context.Background(), &fuzzConn{r: bytes.NewReader(stream)})
}

// clientFlags is the 4-byte client flags field with fixed newstyle and
// no zeroes.
var clientFlags = []byte{0, 0, 0, 3}

func concatBytes(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// FuzzServerOptions feeds bytes as a client's negotiation stream, after
// the client flags, with TLS off and with TLS required.
func FuzzServerOptions(f *testing.F) {
	f.Add(false, optionBytes(proto.OptList, nil))
	f.Add(false, concatBytes(optionBytes(proto.OptStructuredReply, nil), optionBytes(proto.OptListMetaContext, metaData("")), optionBytes(proto.OptGo, infoData("", proto.InfoBlockSize))))
	f.Add(false, optionBytes(proto.OptInfo, infoData("", proto.InfoName, proto.InfoDescription)))
	f.Add(false, optionBytes(proto.OptSetMetaContext, metaData("", "base:allocation", "qemu:")))
	f.Add(false, optionBytes(proto.OptExportName, []byte("plain")))
	f.Add(false, optionBytes(proto.OptGo, []byte{0, 0, 0, 9, 0, 0}))
	f.Add(true, concatBytes(optionBytes(proto.OptStartTLS, nil), optionBytes(proto.OptList, nil)))
	f.Add(true, optionBytes(proto.OptGo, infoData("")))
	f.Add(true, optionBytes(proto.OptAbort, nil))
	f.Add(false, []byte("IHAVEOPT\x00\x00\x00\x07\xff\xff\xff\xff"))

	pki := getTestPKI(f)
	f.Fuzz(func(t *testing.T, tlsRequired bool, stream []byte) {
		cfg := testConfig()
		cfg.HandshakeLimit = time.Second
		if tlsRequired {
			cfg.TLS = pki.tlsServer(false)
			cfg.TLSMode = TLSRequire
		}
		serveFuzzStream(t, cfg, concatBytes(clientFlags, stream))
	})
}

// FuzzServerRequests feeds bytes as the transmission-phase stream of a
// client that negotiated structured replies and both meta contexts.
func FuzzServerRequests(f *testing.F) {
	f.Add(requestBytes(proto.CmdRead, 0, 1, 0, 4096, nil))
	f.Add(requestBytes(proto.CmdWrite, proto.CmdFlagFUA, 2, 512, 4, []byte("abcd")))
	f.Add(concatBytes(requestBytes(proto.CmdWriteZeroes, proto.CmdFlagNoHole, 3, 0, 8192, nil), requestBytes(proto.CmdBlockStatus, 0, 4, 0, 1<<20, nil)))
	f.Add(requestBytes(proto.CmdBlockStatus, proto.CmdFlagReqOne, 5, 4096, 100, nil))
	f.Add(concatBytes(requestBytes(proto.CmdTrim, 0, 6, 0, 8192, nil), requestBytes(proto.CmdRead, proto.CmdFlagDF, 7, 0, 16384, nil)))
	f.Add(requestBytes(proto.CmdCache, 0, 8, 0, 1<<20, nil))
	f.Add(concatBytes(requestBytes(proto.CmdFlush, 0, 9, 0, 0, nil), requestBytes(proto.CmdDisc, 0, 10, 0, 0, nil)))
	f.Add(requestBytes(proto.CmdWrite, 0, 11, 0, 1<<20, nil))
	f.Add(requestBytes(proto.Command(99), 0xffff, 12, 1<<63, 0xffffffff, nil))

	negotiation := concatBytes(
		clientFlags,
		optionBytes(proto.OptStructuredReply, nil),
		optionBytes(proto.OptSetMetaContext, metaData("", proto.ContextBaseAllocation, proto.ContextAllocationDepth)),
		optionBytes(proto.OptGo, infoData("")),
	)
	f.Fuzz(func(t *testing.T, stream []byte) {
		serveFuzzStream(t, testConfig(), concatBytes(negotiation, stream))
	})
}
