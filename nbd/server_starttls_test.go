package nbd

import (
	"bytes"
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

func tlsConfig(t *testing.T, mode TLSMode) ServerConfig {
	cfg := testConfig()
	cfg.TLS = getTestPKI(t).tlsServer(false)
	cfg.TLSMode = mode
	return cfg
}

func TestOptTLSRequiredRefusesOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  proto.Option
		data []byte
	}{
		{"List", proto.OptList, nil},
		{"Info", proto.OptInfo, infoData("")},
		{"Go", proto.OptGo, infoData("")},
		{"GoUnknownExport", proto.OptGo, infoData("nope")},
		{"StructuredReply", proto.OptStructuredReply, nil},
		{"ListMetaContext", proto.OptListMetaContext, metaData("")},
		{"Unknown", proto.Option(99), []byte("data")},
		{"TooBig", proto.OptList, make([]byte, maxOptionPayload+10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := dialWire(t, tlsConfig(t, TLSRequire))
			w.greetDefault()
			w.sendOption(tc.opt, tc.data)
			w.expectReply(tc.opt, proto.RepErrTLSReqd)

			// Still negotiating, and TLS still works.
			w.startTLS(getTestPKI(t).clientConfig())
			w.sendOption(proto.OptList, nil)
			w.expectReply(proto.OptList, proto.RepServer)
		})
	}
}

func TestOptTLSRequiredExportNameCloses(t *testing.T) {
	w, _ := dialWire(t, tlsConfig(t, TLSRequire))
	w.greetDefault()
	w.sendOption(proto.OptExportName, nil)
	w.expectClosed()
}

func TestOptTLSRequiredAbort(t *testing.T) {
	w, _ := dialWire(t, tlsConfig(t, TLSRequire))
	w.greetDefault()
	w.sendOption(proto.OptAbort, nil)
	w.expectReply(proto.OptAbort, proto.RepAck)
	w.expectClosed()
}

func TestOptStartTLSWithData(t *testing.T) {
	w, _ := dialWire(t, tlsConfig(t, TLSRequire))
	w.greetDefault()
	w.sendOption(proto.OptStartTLS, []byte{1})
	w.expectReply(proto.OptStartTLS, proto.RepErrInvalid)
}

func TestOptStartTLSSecond(t *testing.T) {
	w, _ := dialWire(t, tlsConfig(t, TLSRequire))
	w.greetDefault()
	w.startTLS(getTestPKI(t).clientConfig())
	w.sendOption(proto.OptStartTLS, nil)
	w.expectReply(proto.OptStartTLS, proto.RepErrInvalid)
}

func TestOptStartTLSOffPolicy(t *testing.T) {
	cfg := tlsConfig(t, TLSOff)
	w, _ := dialWire(t, cfg)
	w.greetDefault()
	w.sendOption(proto.OptStartTLS, nil)
	w.expectReply(proto.OptStartTLS, proto.RepErrPolicy)
}

// TestOptStartTLSInjection sends STARTTLS and a LIST option in one write,
// as in nbdkit's CVE-2021-3716. The server must not reply to the LIST
// as a plaintext option, because its bytes belong to the TLS handshake,
// which fails.
func TestOptStartTLSInjection(t *testing.T) {
	w, _ := dialWire(t, tlsConfig(t, TLSRequire))
	w.greetDefault()
	w.write(append(optionBytes(proto.OptStartTLS, nil), optionBytes(proto.OptList, nil)...))
	w.expectReply(proto.OptStartTLS, proto.RepAck)

	require.NoError(t, w.conn.SetReadDeadline(time.Now().Add(wireTimeout)))
	rest, err := io.ReadAll(w.conn)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "server kept the connection open")
	var magic [8]byte
	binary.BigEndian.PutUint64(magic[:], proto.OptReplyMagic)
	assert.False(t, bytes.Contains(rest, magic[:]), "server answered the injected option: %x", rest)
}

func TestOptStartTLSDropsState(t *testing.T) {
	w, _ := dialWire(t, tlsConfig(t, TLSOptional))
	w.greetDefault()
	w.sendOption(proto.OptStructuredReply, nil)
	w.expectReply(proto.OptStructuredReply, proto.RepAck)
	require.Len(t, w.metaContexts(proto.OptSetMetaContext, "", proto.ContextBaseAllocation), 1)

	w.startTLS(getTestPKI(t).clientConfig())

	// Structured replies are off again, so SET_META_CONTEXT is invalid
	// and GO advertises no DF.
	w.sendOption(proto.OptSetMetaContext, metaData("", proto.ContextBaseAllocation))
	w.expectReply(proto.OptSetMetaContext, proto.RepErrInvalid)
	_, flags := w.goExport("")
	assert.Zero(t, flags&proto.FlagSendDF)

	// Transmission works over TLS with simple replies.
	w.request(proto.CmdWrite, 0, 1, 0, 4, []byte("abcd"))
	w.expectErrno(1, 0)
	w.request(proto.CmdRead, 0, 2, 0, 4, nil)
	r := w.readTransmissionReply(4)
	assert.True(t, r.simple)
	assert.Equal(t, "abcd", string(r.data))
	w.request(proto.CmdDisc, 0, 3, 0, 0, nil)
}

func TestOptTLSOptionalPlaintext(t *testing.T) {
	w, _ := dialWire(t, tlsConfig(t, TLSOptional))
	size, _ := w.negotiate(true)
	assert.Equal(t, uint64(1<<20), size)
}

type testAuthz struct{ allowed string }

func (a testAuthz) IsAllowed(identity string) (bool, error) { return identity == a.allowed, nil }

func TestOptTLSAuthz(t *testing.T) {
	for _, tc := range []struct {
		name    string
		allowed string
		ok      bool
	}{
		{"Allowed", "CN=client,O=gonbd", true},
		{"Denied", "CN=someone else", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.TLS = getTestPKI(t).tlsServer(true)
			cfg.TLSMode = TLSRequire
			cfg.Authz = testAuthz{allowed: tc.allowed}
			w, _ := dialWire(t, cfg)
			w.greetDefault()
			w.startTLS(getTestPKI(t).clientConfig())
			w.sendOption(proto.OptList, nil)
			if !tc.ok {
				w.expectClosed()
				return
			}
			w.expectReply(proto.OptList, proto.RepServer)
		})
	}
}

func TestOptTLSHandshakeFailureIsolated(t *testing.T) {
	cfg := tlsConfig(t, TLSRequire)
	w, s := dialWire(t, cfg)
	w.greetDefault()
	w.sendOption(proto.OptStartTLS, nil)
	w.expectReply(proto.OptStartTLS, proto.RepAck)
	w.write([]byte("this is not a TLS client hello......"))
	require.NoError(t, w.conn.SetReadDeadline(time.Now().Add(wireTimeout)))
	_, _ = io.ReadAll(w.conn)

	// Another client on the same server is served.
	s.mu.Lock()
	l := anyListener(s)
	s.mu.Unlock()
	conn, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	w2 := &testWire{t: t, conn: conn}
	w2.greetDefault()
	w2.startTLS(getTestPKI(t).clientConfig())
	w2.goExport("")
}

func anyListener(s *Server) net.Listener {
	for l := range s.listeners {
		return l
	}
	return nil
}
