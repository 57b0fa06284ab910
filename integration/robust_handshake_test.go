package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// robustMemoryArgs serve a 64 MiB RAM disk to any number of clients,
// persistently, and drop clients that have not finished the handshake
// within one second.
var robustMemoryArgs = []string{"-e", "0", "-t", "--handshake-limit", "1", "--image-opts", "driver=memory,size=64M"}

// maxAttackGrowthKiB bounds how far the server's peak resident set may
// rise above its size before the attacks. The attacks announce up to
// 4 GiB of option data and send 16 MiB, so a server that buffered them
// would pass this bound many times over.
const maxAttackGrowthKiB = 64 << 10

// attack is one hostile client. run returns once the server has sent
// the reply the protocol requires or closed the connection.
type attack struct {
	name string
	run  func(t *testing.T, s *robustServer)
}

// runAttacks runs each attack against s while a well-behaved client stays
// connected and keeps working, then checks that every hostile connection
// was closed and memory stayed bounded.
func runAttacks(t *testing.T, s *robustServer, attacks []attack) {
	good := s.dial(t)
	s.checkServes(t, good, 0, 1)
	before := settledStats(t, s.pid)
	t.Logf("before the attacks: %s", before)

	for i, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			a.run(t, s)
			s.checkServes(t, good, int64(i+1)<<16, byte(i))
		})
	}

	after := waitFDs(t, s.pid, before.fds)
	t.Logf("after the attacks: %s", after)
	assert.LessOrEqual(t, after.fds, before.fds, "open fds after the hostile clients left")
	assert.LessOrEqual(t, after.hwmKiB-before.rssKiB, memoryBoundKiB(maxAttackGrowthKiB), "peak RSS growth in KiB")
	s.checkServes(t, good, 0, 2)
}

func TestRobustHandshakePlain(t *testing.T) {
	s := startRobustServer(t, robustMemoryArgs...)
	runAttacks(t, s, append(plainAttacks(), stallAttacks()...))
}

func TestRobustHandshakeX509(t *testing.T) {
	s := startTLSServer(t, x509Setup(t), robustMemoryArgs...)
	runAttacks(t, s, append(tlsAttacks(), stallAttacks()...))
}

func TestRobustHandshakePSK(t *testing.T) {
	s := startTLSServer(t, pskSetup(t), robustMemoryArgs...)
	runAttacks(t, s, append(tlsAttacks(), stallAttacks()...))
}

// newstyleFlags are the client flags of a well-behaved modern client.
const newstyleFlags = proto.ClientFlagFixedNewstyle | proto.ClientFlagNoZeroes

// plainAttacks break the plaintext negotiation of a server without TLS.
func plainAttacks() []attack {
	return []attack{
		{"UnknownClientFlags", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags|1<<31)
			c.expectClosed()
		}},
		{"BadOptionMagic", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.write(bytes.Repeat([]byte{0xee}, proto.OptionHeaderSize))
			c.expectClosed()
		}},
		{"OptionDataTooBig", func(t *testing.T, s *robustServer) {
			// 8 MiB of data, sent in full: the server skips it, replies
			// NBD_REP_ERR_TOO_BIG and the negotiation goes on.
			c := dialRawFlags(t, s, newstyleFlags)
			c.write(optionHeader(proto.OptList, 8<<20))
			c.write(make([]byte, 8<<20))
			c.expectReply(proto.OptList, proto.RepErrTooBig)
			c.sendOption(proto.OptList, nil)
			c.expectReply(proto.OptList, proto.RepAck)
		}},
		{"OptionDataAnnouncedGigabytes", func(t *testing.T, s *robustServer) {
			// 4 GiB announced, 16 MiB sent, then silence: the
			// handshake limit ends the connection.
			c := dialRawFlags(t, s, newstyleFlags)
			c.write(optionHeader(proto.OptInfo, 0xffffffff))
			c.write(make([]byte, 16<<20))
			c.expectClosed()
		}},
		{"ExportNameAnnouncedGigabytes", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.write(optionHeader(proto.OptExportName, 0xffffffff))
			c.expectClosed()
		}},
		{"OptionCountLimit", func(t *testing.T, s *robustServer) {
			// Unknown options get NBD_REP_ERR_UNSUP until the 256-option
			// limit, then the server hangs up.
			c := dialRawFlags(t, s, newstyleFlags)
			var unsupported int
			for range 300 {
				if _, err := c.conn.Write(optionBytes(proto.Option(0x7f00), nil)); err != nil {
					break
				}
				var hb [proto.OptionReplyHeaderSize]byte
				if _, err := io.ReadFull(c.conn, hb[:]); err != nil {
					break
				}
				h, err := proto.DecodeOptionReplyHeader(hb[:])
				require.NoError(t, err)
				require.Equal(t, proto.RepErrUnsup, h.Reply)
				c.readFull(make([]byte, h.Length))
				unsupported++
			}
			assert.Equal(t, 256, unsupported, "options answered before the limit")
			c.expectClosed()
		}},
		{"ExportNameOver4096Bytes", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.sendOption(proto.OptExportName, bytes.Repeat([]byte("n"), 5000))
			c.expectClosed()
		}},
		{"GoNameOver4096Bytes", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.sendOption(proto.OptGo, goData(strings.Repeat("n", 5000)))
			c.expectReply(proto.OptGo, proto.RepErrInvalid)
			c.goTransmission(false)
		}},
		{"MetaContextQueryOver4096Bytes", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.sendOption(proto.OptStructuredReply, nil)
			c.expectReply(proto.OptStructuredReply, proto.RepAck)
			c.sendOption(proto.OptSetMetaContext, metaContextData("", strings.Repeat("q", 5000)))
			c.expectReply(proto.OptSetMetaContext, proto.RepErrInvalid)
			c.sendOption(proto.OptAbort, nil)
			c.expectReply(proto.OptAbort, proto.RepAck)
		}},
		{"GoNameLengthPastData", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.sendOption(proto.OptGo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0})
			c.expectReply(proto.OptGo, proto.RepErrInvalid)
		}},
		{"StartTLSWithoutCredentials", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.sendOption(proto.OptStartTLS, nil)
			c.expectReply(proto.OptStartTLS, proto.RepErrPolicy)
			c.goTransmission(true)
		}},
	}
}

// metaContextData returns the data of NBD_OPT_SET_META_CONTEXT.
func metaContextData(export string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	b = append(b, export...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// tlsAttacks break the negotiation of a server that requires TLS.
func tlsAttacks() []attack {
	return []attack{
		{"ExportNameBeforeTLS", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.sendOption(proto.OptExportName, nil)
			c.expectClosed()
		}},
		{"GoBeforeTLS", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.sendOption(proto.OptGo, goData(""))
			c.expectReply(proto.OptGo, proto.RepErrTLSReqd)
			c.sendOption(proto.OptAbort, nil)
			c.expectReply(proto.OptAbort, proto.RepAck)
		}},
		{"OptionDataTooBigBeforeTLS", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.write(optionHeader(proto.OptList, 8<<20))
			c.write(make([]byte, 8<<20))
			c.expectReply(proto.OptList, proto.RepErrTLSReqd)
		}},
		{"StartTLSTwice", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.startTLS(s)
			c.sendOption(proto.OptStartTLS, nil)
			c.expectReply(proto.OptStartTLS, proto.RepErrInvalid)
			c.goTransmission(true)
		}},
		{"StartTLSWithData", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.sendOption(proto.OptStartTLS, []byte("x"))
			c.expectReply(proto.OptStartTLS, proto.RepErrInvalid)
		}},
		{"PlaintextAfterStartTLS", func(t *testing.T, s *robustServer) {
			// An option sent in plaintext right behind STARTTLS must
			// never get a reply: it is not a ClientHello, so the TLS
			// handshake fails and the connection closes.
			c := dialRawFlags(t, s, newstyleFlags)
			c.write(append(optionBytes(proto.OptStartTLS, nil), optionBytes(proto.OptGo, goData(""))...))
			c.expectReply(proto.OptStartTLS, proto.RepAck)
			c.deadline()
			rest, _ := io.ReadAll(io.LimitReader(c.conn, 1<<20))
			replyMagic := binary.BigEndian.AppendUint64(nil, proto.OptReplyMagic)
			assert.False(t, bytes.Contains(rest, replyMagic), "plaintext option reply after STARTTLS: %x", rest)
		}},
		{"GarbageClientHello", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.sendOption(proto.OptStartTLS, nil)
			c.expectReply(proto.OptStartTLS, proto.RepAck)
			garbage := make([]byte, 4096)
			_, err := rand.Read(garbage)
			require.NoError(t, err)
			c.write(garbage)
			c.expectClosed()
		}},
		{"ClientHelloRecordOf16MiB", func(t *testing.T, s *robustServer) {
			// A handshake record header announcing far more than the
			// 16 KiB TLS allows.
			c := dialRawFlags(t, s, newstyleFlags)
			c.sendOption(proto.OptStartTLS, nil)
			c.expectReply(proto.OptStartTLS, proto.RepAck)
			c.write([]byte{22, 3, 1, 0xff, 0xff, 1, 0xff, 0xff, 0xff})
			c.expectClosed()
		}},
		{"StallAfterStartTLS", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.sendOption(proto.OptStartTLS, nil)
			c.expectReply(proto.OptStartTLS, proto.RepAck)
			c.expectClosed()
		}},
		{"StallInsideClientHello", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.sendOption(proto.OptStartTLS, nil)
			c.expectReply(proto.OptStartTLS, proto.RepAck)
			c.write([]byte{22, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3, 3})
			c.expectClosed()
		}},
	}
}

// startTLS sends NBD_OPT_STARTTLS and runs the TLS handshake with the
// server's client credentials; later options travel over TLS.
func (c *rawClient) startTLS(s *robustServer) {
	c.t.Helper()
	c.sendOption(proto.OptStartTLS, nil)
	c.expectReply(proto.OptStartTLS, proto.RepAck)
	ctx, cancel := context.WithTimeout(context.Background(), rawTimeout)
	defer cancel()
	tconn, err := s.tls.ClientHandshake(ctx, c.conn, "localhost")
	require.NoError(c.t, err)
	c.conn = tconn
}

// stallAttacks are clients that stop partway; the handshake limit
// (one second here) must end each of them.
func stallAttacks() []attack {
	return []attack{
		{"StallBeforeClientFlags", func(t *testing.T, s *robustServer) {
			c := dialRaw(t, s)
			c.expectClosed()
		}},
		{"StallInsideOptionHeader", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.write(optionHeader(proto.OptGo, 10)[:9])
			c.expectClosed()
		}},
		{"StallInsideOptionData", func(t *testing.T, s *robustServer) {
			c := dialRawFlags(t, s, newstyleFlags)
			c.write(optionHeader(proto.OptGo, 100))
			c.write(make([]byte, 10))
			c.expectClosed()
		}},
		{"Stall200Clients", func(t *testing.T, s *robustServer) {
			// Many idle connections at once (a slowloris attack)
			// neither block the accept loop nor outlive the limit.
			var wg sync.WaitGroup
			conns := make([]net.Conn, 200)
			for i := range conns {
				conn, err := net.Dial(s.network, s.addr)
				require.NoError(t, err)
				t.Cleanup(func() { conn.Close() })
				conns[i] = conn
			}
			closed := make([]bool, len(conns))
			for i, conn := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if conn.SetDeadline(time.Now().Add(rawTimeout)) != nil {
						return
					}
					_, err := io.Copy(io.Discard, conn)
					closed[i] = !isTimeout(err)
				}()
			}
			wg.Wait()
			for i, ok := range closed {
				require.True(t, ok, "idle client %d was not closed by the server", i)
			}
		}},
	}
}
