package nbd

import (
	"context"
	"net"
	"testing"

	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/require"
)

// TestShutdownMidRequest starts Shutdown while the reader has read part
// of a request and waits for the rest. The client is still sending that
// request, so the server reads the rest, replies and only then closes.
// The test runs on a Unix socket, where a write is in the server's
// receive queue when it returns, so an empty queue shows that the reader
// took the first part.
func TestShutdownMidRequest(t *testing.T) {
	payload := make([]byte, 4096)
	for _, tc := range []struct {
		name   string
		offset uint64
		split  int // bytes sent before Shutdown
		errno  proto.Errno
	}{
		{"MidHeaderGetsESHUTDOWN", 0, 10, proto.ESHUTDOWN},
		{"MidPayloadIsWritten", 0, proto.RequestHeaderSize + 1000, 0},
		{"MidSkippedPayloadGetsCheckError", 1 << 20, proto.RequestHeaderSize + 1000, proto.ENOSPC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := listenUnix(t)
			s := startServer(t, ServerConfig{Exports: []*Export{{Name: "", Backend: newTestBackend(1 << 20)}}}, l)
			conn, err := net.Dial("unix", l.Addr().String())
			require.NoError(t, err)
			t.Cleanup(func() { conn.Close() })
			w := &testWire{t: t, conn: conn}
			w.negotiate(false)
			waitFor(t, func() bool { return len(connsOf(s)) == 1 })
			sc := connsOf(s)[0]

			req := requestBytes(proto.CmdWrite, 0, 1, tc.offset, uint32(len(payload)), payload)
			w.write(req[:tc.split])
			waitFor(t, func() bool { return sc.unreadBytes() == 0 })

			shutdownDone := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), wireTimeout)
				defer cancel()
				shutdownDone <- s.Shutdown(ctx)
			}()
			waitFor(t, sc.isShuttingDown)

			w.write(req[tc.split:])
			w.expectErrno(1, tc.errno)
			w.expectClosed()
			require.NoError(t, <-shutdownDone)
		})
	}
}
