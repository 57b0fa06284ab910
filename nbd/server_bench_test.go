package nbd

import (
	"encoding/binary"
	"io"
	"net"
	"testing"

	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/require"
)

// benchmarkServer sends b.N requests of cmd with length bytes over a
// loopback connection while another goroutine reads the replies, and
// reports allocations per request, client side included. Replies are
// read without decoding payloads.
func benchmarkServer(b *testing.B, cmd proto.Command, length uint32, structured bool) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	s, err := NewServer(ServerConfig{Exports: []*Export{{Name: "", Backend: newTestBackend(64 << 20)}}, Persistent: true})
	require.NoError(b, err)
	go s.Serve(b.Context(), l)
	conn, err := net.Dial("tcp", l.Addr().String())
	require.NoError(b, err)
	defer conn.Close()
	w := &testWire{t: b, conn: conn}
	w.negotiate(structured)

	// Requests go out in groups of writeGroup without waiting for
	// replies; TCP flow control bounds how many are in flight.
	const writeGroup = 16
	var payload []byte
	if cmd == proto.CmdWrite {
		payload = make([]byte, length)
	}
	req := requestBytes(cmd, 0, 0, 0, length, payload)
	replyLen := proto.SimpleReplyHeaderSize
	if cmd == proto.CmdRead {
		replyLen += int(length)
		if structured {
			replyLen = proto.StructuredReplyHeaderSize + 8 + int(length)
		}
	}

	done := make(chan error, 1)
	go func() {
		buf := make([]byte, replyLen)
		for range b.N {
			if _, err := io.ReadFull(conn, buf); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()

	b.SetBytes(int64(length))
	b.ReportAllocs()
	b.ResetTimer()
	sent := 0
	for sent < b.N {
		n := min(writeGroup, b.N-sent)
		for i := range n {
			binary.BigEndian.PutUint64(req[8:16], uint64(sent+i))
			if _, err := conn.Write(req); err != nil {
				b.Fatal(err)
			}
		}
		sent += n
	}
	require.NoError(b, <-done)
}

func BenchmarkServerRead4K(b *testing.B)           { benchmarkServer(b, proto.CmdRead, 4096, false) }
func BenchmarkServerRead4KStructured(b *testing.B) { benchmarkServer(b, proto.CmdRead, 4096, true) }
func BenchmarkServerRead1M(b *testing.B)           { benchmarkServer(b, proto.CmdRead, 1<<20, true) }
func BenchmarkServerWrite4K(b *testing.B)          { benchmarkServer(b, proto.CmdWrite, 4096, false) }
func BenchmarkServerWrite1M(b *testing.B)          { benchmarkServer(b, proto.CmdWrite, 1<<20, false) }
