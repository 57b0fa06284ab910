package nbd

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testConfig returns a config with exports "" (all capabilities, 1 MiB)
// and "plain" (minimum contract, read-only, 64 KiB).
func testConfig() ServerConfig {
	return ServerConfig{Exports: []*Export{
		{Name: "", Description: "default disk", Backend: newTestBackend(1 << 20), AllocationDepth: true},
		{Name: "plain", Backend: plainBackend{newTestBackend(64 << 10)}, ReadOnly: true},
	}}
}

// TestOptReplies covers every option that gets a single reply.
func TestOptReplies(t *testing.T) {
	long := string(bytes.Repeat([]byte{'x'}, maxStringLen+1))
	for _, tc := range []struct {
		name string
		opt  proto.Option
		data []byte
		want proto.Reply
	}{
		{"TestOptUnknownOption", proto.Option(99), []byte("abc"), proto.RepErrUnsup},
		{"TestOptPeekExportUnsupported", proto.OptPeekExport, nil, proto.RepErrUnsup},
		{"TestOptExtendedHeadersUnsupported", proto.OptExtendedHeaders, nil, proto.RepErrUnsup},
		{"TestOptListWithData", proto.OptList, []byte{1}, proto.RepErrInvalid},
		{"TestOptStructuredReplyWithData", proto.OptStructuredReply, []byte{1}, proto.RepErrInvalid},
		{"TestOptStartTLSWithoutTLS", proto.OptStartTLS, nil, proto.RepErrPolicy},
		{"TestOptGoUnknownExport", proto.OptGo, infoData("nope"), proto.RepErrUnknown},
		{"TestOptInfoUnknownExport", proto.OptInfo, infoData("nope"), proto.RepErrUnknown},
		{"TestOptGoTooShort", proto.OptGo, []byte{0, 0, 0, 0, 0}, proto.RepErrInvalid},
		{"TestOptGoNameLengthPastData", proto.OptGo, []byte{0, 0, 0, 9, 'a', 0, 0}, proto.RepErrInvalid},
		{"TestOptGoNameTooLong", proto.OptGo, infoData(long), proto.RepErrInvalid},
		{"TestOptGoInfoCountTooHigh", proto.OptGo, []byte{0, 0, 0, 0, 0, 1}, proto.RepErrInvalid},
		{"TestOptGoInfoCountMismatch", proto.OptGo, []byte{0, 0, 0, 0, 0, 2, 0, 1}, proto.RepErrInvalid},
		{"TestOptGoTrailingByte", proto.OptGo, append(infoData(""), 9), proto.RepErrInvalid},
		{"TestOptSetMetaContextBeforeStructured", proto.OptSetMetaContext, metaData("", proto.ContextBaseAllocation), proto.RepErrInvalid},
		{"TestOptListMetaContextUnknownExport", proto.OptListMetaContext, metaData("nope"), proto.RepErrUnknown},
		{"TestOptListMetaContextTruncated", proto.OptListMetaContext, metaData("", "base:allocation")[:12], proto.RepErrInvalid},
		{"TestOptListMetaContextQueryPastData", proto.OptListMetaContext, []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 'b'}, proto.RepErrInvalid},
		{"TestOptListMetaContextCountTooHigh", proto.OptListMetaContext, []byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, proto.RepErrInvalid},
		{"TestOptListMetaContextTrailingBytes", proto.OptListMetaContext, append(metaData(""), 1), proto.RepErrInvalid},
		{"TestOptListMetaContextQueryTooLong", proto.OptListMetaContext, metaData("", "base:"+long), proto.RepErrInvalid},
		{"TestOptListMetaContextNoQueryCount", proto.OptListMetaContext, []byte{0, 0, 0, 0}, proto.RepErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := dialWire(t, testConfig())
			w.greetDefault()
			w.sendOption(tc.opt, tc.data)
			w.expectReply(tc.opt, tc.want)

			// The connection goes on after an error reply.
			w.sendOption(proto.OptList, nil)
			w.expectReply(proto.OptList, proto.RepServer)
		})
	}
}

func TestOptUnknownClientFlags(t *testing.T) {
	w, _ := dialWire(t, testConfig())
	w.greet(proto.ClientFlagFixedNewstyle | 1<<5)
	w.expectClosed()
}

func TestOptBadOptionMagic(t *testing.T) {
	w, _ := dialWire(t, testConfig())
	w.greetDefault()
	b := optionBytes(proto.OptList, nil)
	b[0] ^= 0xff
	w.write(b)
	w.expectClosed()
}

func TestOptList(t *testing.T) {
	w, _ := dialWire(t, testConfig())
	w.greetDefault()
	w.sendOption(proto.OptList, nil)

	first := w.expectReply(proto.OptList, proto.RepServer)
	assert.Equal(t, uint32(0), binary.BigEndian.Uint32(first[0:4]))
	assert.Equal(t, "default disk", string(first[4:]), "description after the name")
	second := w.expectReply(proto.OptList, proto.RepServer)
	assert.Equal(t, uint32(5), binary.BigEndian.Uint32(second[0:4]))
	assert.Equal(t, "plain", string(second[4:]))
	w.expectReply(proto.OptList, proto.RepAck)
}

func TestOptAbort(t *testing.T) {
	w, _ := dialWire(t, testConfig())
	w.greetDefault()
	w.sendOption(proto.OptAbort, []byte("ignored"))
	w.expectReply(proto.OptAbort, proto.RepAck)
	w.expectClosed()
}

func TestOptExportNameUnknown(t *testing.T) {
	w, _ := dialWire(t, testConfig())
	w.greetDefault()
	w.sendOption(proto.OptExportName, []byte("nope"))
	w.expectClosed()
}

func TestOptExportNameTooLong(t *testing.T) {
	w, _ := dialWire(t, testConfig())
	w.greetDefault()
	w.sendOption(proto.OptExportName, bytes.Repeat([]byte{'x'}, maxStringLen+1))
	w.expectClosed()
}

func TestOptExportNameZeroes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		flags    uint32
		replyLen int
	}{
		{"NoZeroes", proto.ClientFlagFixedNewstyle | proto.ClientFlagNoZeroes, 10},
		{"Zeroes", proto.ClientFlagFixedNewstyle, 10 + 124},
		{"NotFixedNewstyle", 0, 10 + 124},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := dialWire(t, testConfig())
			w.greet(tc.flags)
			w.sendOption(proto.OptExportName, []byte("plain"))
			b := w.read(tc.replyLen)
			assert.Equal(t, uint64(64<<10), binary.BigEndian.Uint64(b[0:8]))
			flags := proto.TransmissionFlags(binary.BigEndian.Uint16(b[8:10]))
			assert.Equal(t, proto.FlagHasFlags|proto.FlagReadOnly|proto.FlagSendFlush, flags)
			assert.Equal(t, make([]byte, tc.replyLen-10), b[10:])

			// Transmission has started: a read of the first 512 bytes.
			w.request(proto.CmdRead, 0, 1, 0, 512, nil)
			r := w.readTransmissionReply(512)
			assert.Equal(t, proto.Errno(0), r.errno)
			assert.Len(t, r.data, 512)
		})
	}
}

func TestOptInfoReplies(t *testing.T) {
	w, _ := dialWire(t, testConfig())
	w.greetDefault()
	w.sendOption(proto.OptInfo, infoData("", proto.InfoName, proto.InfoDescription, proto.InfoBlockSize, proto.Info(77)))

	got := map[proto.Info][]byte{}
	for {
		h, data := w.readReply()
		if h.Reply == proto.RepAck {
			break
		}
		require.Equal(t, proto.RepInfo, h.Reply)
		info := proto.Info(binary.BigEndian.Uint16(data))
		assert.NotContains(t, got, info, "info sent twice")
		got[info] = data[2:]
	}
	require.Len(t, got, 4)
	assert.Equal(t, uint64(1<<20), binary.BigEndian.Uint64(got[proto.InfoExport][0:8]))
	assert.Equal(t, "", string(got[proto.InfoName]))
	assert.Equal(t, "default disk", string(got[proto.InfoDescription]))
	assert.Equal(t, []byte{0, 0, 0, 1, 0, 0, 0x10, 0, 0x02, 0, 0, 0}, got[proto.InfoBlockSize])

	// INFO does not end negotiation.
	w.sendOption(proto.OptStructuredReply, nil)
	w.expectReply(proto.OptStructuredReply, proto.RepAck)
}

func TestOptGoFlags(t *testing.T) {
	for _, tc := range []struct {
		name       string
		export     string
		structured bool
		want       proto.TransmissionFlags
	}{
		{"AllCapabilities", "", true, proto.FlagHasFlags | proto.FlagSendFlush | proto.FlagSendFUA | proto.FlagSendTrim |
			proto.FlagSendWriteZeroes | proto.FlagSendFastZero | proto.FlagSendDF | proto.FlagSendCache | proto.FlagCanMultiConn},
		{"NoDFWithoutStructured", "", false, proto.FlagHasFlags | proto.FlagSendFlush | proto.FlagSendFUA | proto.FlagSendTrim |
			proto.FlagSendWriteZeroes | proto.FlagSendFastZero | proto.FlagSendCache | proto.FlagCanMultiConn},
		{"PlainReadOnly", "plain", true, proto.FlagHasFlags | proto.FlagReadOnly | proto.FlagSendFlush | proto.FlagSendDF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := dialWire(t, testConfig())
			w.greetDefault()
			if tc.structured {
				w.sendOption(proto.OptStructuredReply, nil)
				w.expectReply(proto.OptStructuredReply, proto.RepAck)
			}
			_, flags := w.goExport(tc.export)
			assert.Equal(t, tc.want.Names(), flags.Names())
			assert.Equal(t, tc.want, flags)
		})
	}
}

func TestOptStructuredReplyTwice(t *testing.T) {
	w, _ := dialWire(t, testConfig())
	w.greetDefault()
	w.sendOption(proto.OptStructuredReply, nil)
	w.expectReply(proto.OptStructuredReply, proto.RepAck)
	w.sendOption(proto.OptStructuredReply, nil)
	w.expectReply(proto.OptStructuredReply, proto.RepErrInvalid)
}

// metaContexts sends a meta context option and returns the context names
// and IDs replied before NBD_REP_ACK.
func (w *testWire) metaContexts(opt proto.Option, export string, queries ...string) map[string]uint32 {
	w.t.Helper()
	w.sendOption(opt, metaData(export, queries...))
	got := map[string]uint32{}
	for {
		h, data := w.readReply()
		require.Equal(w.t, opt, h.Option)
		if h.Reply == proto.RepAck {
			return got
		}
		require.Equal(w.t, proto.RepMetaContext.String(), h.Reply.String(), "reply %q", data)
		got[string(data[4:])] = binary.BigEndian.Uint32(data[0:4])
	}
}

func TestOptMetaContextQueries(t *testing.T) {
	base, depth := proto.ContextBaseAllocation, proto.ContextAllocationDepth
	for _, tc := range []struct {
		name    string
		opt     proto.Option
		export  string
		queries []string
		want    []string
	}{
		{"TestOptListMetaContextAll", proto.OptListMetaContext, "", nil, []string{base, depth}},
		{"TestOptListMetaContextAllNoDepth", proto.OptListMetaContext, "plain", nil, []string{base}},
		{"TestOptListMetaContextBaseWildcard", proto.OptListMetaContext, "", []string{"base:"}, []string{base}},
		{"TestOptListMetaContextQemuWildcard", proto.OptListMetaContext, "", []string{"qemu:"}, []string{depth}},
		{"TestOptListMetaContextQemuWildcardNoDepth", proto.OptListMetaContext, "plain", []string{"qemu:"}, nil},
		{"TestOptListMetaContextExact", proto.OptListMetaContext, "", []string{depth}, []string{depth}},
		{"TestOptListMetaContextUnknownNamespace", proto.OptListMetaContext, "", []string{"x-foo:bar", "nocolon", "base:other"}, nil},
		{"TestOptListMetaContextDirtyBitmap", proto.OptListMetaContext, "", []string{"qemu:dirty-bitmap:"}, nil},
		{"TestOptSetMetaContextNoQueries", proto.OptSetMetaContext, "", nil, nil},
		{"TestOptSetMetaContextBaseWildcard", proto.OptSetMetaContext, "", []string{"base:"}, nil},
		{"TestOptSetMetaContextQemuWildcard", proto.OptSetMetaContext, "", []string{"qemu:"}, nil},
		{"TestOptSetMetaContextBoth", proto.OptSetMetaContext, "", []string{base, depth, base}, []string{base, depth}},
		{"TestOptSetMetaContextDepthNotOffered", proto.OptSetMetaContext, "plain", []string{depth}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := dialWire(t, testConfig())
			w.greetDefault()
			w.sendOption(proto.OptStructuredReply, nil)
			w.expectReply(proto.OptStructuredReply, proto.RepAck)

			got := w.metaContexts(tc.opt, tc.export, tc.queries...)
			names := []string{}
			for n, id := range got {
				names = append(names, n)
				if tc.opt == proto.OptListMetaContext {
					assert.Zero(t, id, "LIST replies carry context ID 0")
				} else {
					assert.NotZero(t, id)
				}
			}
			want := tc.want
			if want == nil {
				want = []string{}
			}
			assert.ElementsMatch(t, want, names)
		})
	}
}

func TestOptSetMetaContextForOtherExport(t *testing.T) {
	w, _ := dialWire(t, testConfig())
	w.greetDefault()
	w.sendOption(proto.OptStructuredReply, nil)
	w.expectReply(proto.OptStructuredReply, proto.RepAck)
	require.Len(t, w.metaContexts(proto.OptSetMetaContext, "plain", proto.ContextBaseAllocation), 1)
	w.goExport("")

	// The contexts were for "plain", so block status on "" is invalid.
	w.request(proto.CmdBlockStatus, 0, 1, 0, 4096, nil)
	w.expectErrno(1, proto.EINVAL)
}

func TestOptPayloadTooBig(t *testing.T) {
	w, _ := dialWire(t, testConfig())
	w.greetDefault()
	data := make([]byte, maxOptionPayload+1)
	w.sendOption(proto.OptList, data)
	w.expectReply(proto.OptList, proto.RepErrTooBig)

	w.sendOption(proto.OptList, nil)
	w.expectReply(proto.OptList, proto.RepServer)
}

func TestOptHugeAnnouncedLength(t *testing.T) {
	w, _ := dialWire(t, testConfig())
	w.greetDefault()
	// Announce 4 GiB, send a little, then stop writing: the server must
	// not allocate the announced size and must end when the client does.
	b := make([]byte, proto.OptionHeaderSize)
	proto.OptionHeader{Option: proto.OptGo, Length: 0xffffffff}.Encode(b)
	w.write(append(b, make([]byte, 1000)...))
	require.NoError(t, w.conn.(interface{ CloseWrite() error }).CloseWrite())
	w.expectClosed()
}

func TestOptExportNameHugeLength(t *testing.T) {
	w, _ := dialWire(t, testConfig())
	w.greetDefault()
	b := make([]byte, proto.OptionHeaderSize)
	proto.OptionHeader{Option: proto.OptExportName, Length: 1 << 30}.Encode(b)
	w.write(b)
	w.expectClosed()
}

func TestOptCountLimit(t *testing.T) {
	w, _ := dialWire(t, testConfig())
	w.greetDefault()
	for range maxOptions {
		w.sendOption(proto.Option(99), nil)
		w.expectReply(proto.Option(99), proto.RepErrUnsup)
	}
	w.sendOption(proto.Option(99), nil)
	w.expectClosed()
}

func TestOptHandshakeLimit(t *testing.T) {
	cfg := testConfig()
	cfg.HandshakeLimit = 100 * time.Millisecond
	w, _ := dialWire(t, cfg)
	w.greetDefault()
	// Sending nothing more: the server drops the client once the limit
	// passes.
	w.expectClosed()
}

func TestOptHandshakeLimitNotInTransmission(t *testing.T) {
	cfg := testConfig()
	cfg.HandshakeLimit = 100 * time.Millisecond
	w, _ := dialWire(t, cfg)
	w.negotiate(false)
	// The limit no longer applies: wait past it using a request that
	// needs the server, then read once more.
	w.request(proto.CmdFlush, 0, 1, 0, 0, nil)
	w.expectErrno(1, 0)
	time.Sleep(300 * time.Millisecond)
	w.request(proto.CmdFlush, 0, 2, 0, 0, nil)
	w.expectErrno(2, 0)
}
