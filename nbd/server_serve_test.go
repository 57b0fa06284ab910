package nbd

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func dialRaw(t *testing.T, addr string) *testWire {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return &testWire{t: t, conn: conn}
}

// waitServe waits for Serve's result.
func waitServe(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(wireTimeout):
		t.Fatalf("Serve did not return within %s", wireTimeout)
		return nil
	}
}

func TestServeNotPersistentExits(t *testing.T) {
	l, _ := listenTCP(t)
	s, err := NewServer(testConfig())
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), l) }()

	w := dialRaw(t, l.Addr().String())
	w.negotiate(false)
	w.request(proto.CmdDisc, 0, 1, 0, 0, nil)
	w.expectClosed()

	assert.NoError(t, waitServe(t, done))
}

func TestServeContextCancel(t *testing.T) {
	l, _ := listenTCP(t)
	s, err := NewServer(testConfig())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()

	w := dialRaw(t, l.Addr().String())
	w.negotiate(false)
	cancel()
	assert.ErrorIs(t, waitServe(t, done), context.Canceled)
	w.expectClosed()
}

func TestServeAfterShutdown(t *testing.T) {
	l, _ := listenTCP(t)
	s, err := NewServer(testConfig())
	require.NoError(t, err)
	require.NoError(t, s.Shutdown(context.Background()))
	assert.ErrorIs(t, s.Serve(context.Background(), l), ErrServerClosed)
}

func TestServeMaxConnections(t *testing.T) {
	l, _ := listenTCP(t)
	cfg := testConfig()
	cfg.MaxConnections = 1
	s := startServer(t, cfg, l)

	first := dialRaw(t, l.Addr().String())
	first.negotiate(false)

	// The second client's TCP connection waits in the backlog: the
	// server does not accept it while the first is connected.
	second := dialRaw(t, l.Addr().String())
	first.request(proto.CmdFlush, 0, 1, 0, 0, nil)
	first.expectErrno(1, 0)
	assert.Len(t, connsOf(s), 1)

	first.request(proto.CmdDisc, 0, 2, 0, 0, nil)
	first.expectClosed()
	second.negotiate(false)
	assert.Len(t, connsOf(s), 1)
}

func TestNewServerRejectsBadConfig(t *testing.T) {
	b := newTestBackend(4096)
	for _, tc := range []struct {
		name string
		cfg  ServerConfig
	}{
		{"DuplicateExport", ServerConfig{Exports: []*Export{{Name: "a", Backend: b}, {Name: "a", Backend: b}}}},
		{"NoBackend", ServerConfig{Exports: []*Export{{Name: "a"}}}},
		{"DepthWithoutDepthExtenter", ServerConfig{Exports: []*Export{{Name: "a", Backend: plainBackend{b}, AllocationDepth: true}}}},
		{"TLSModeWithoutCredentials", ServerConfig{TLSMode: TLSRequire}},
		{"NegativeMaxConnections", ServerConfig{MaxConnections: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewServer(tc.cfg)
			assert.Error(t, err)
		})
	}
}

// TestWriteTimeoutStuckClient sends reads and never reads the replies:
// the writer's deadline ends the connection instead of blocking forever.
func TestWriteTimeoutStuckClient(t *testing.T) {
	l, _ := listenTCP(t)
	cfg := testConfig()
	cfg.WriteTimeout = 200 * time.Millisecond
	s := startServer(t, cfg, l)
	w := dialRaw(t, l.Addr().String())
	require.NoError(t, w.conn.(*net.TCPConn).SetReadBuffer(4096))
	w.negotiate(false)
	waitFor(t, func() bool { return len(connsOf(s)) == 1 })

	// 64 reads of 1 MiB are far more than the socket buffers hold.
	var batch []byte
	for i := range uint64(64) {
		batch = append(batch, requestBytes(proto.CmdRead, 0, i, 0, 1<<20, nil)...)
	}
	w.write(batch)

	waitFor(t, func() bool { return len(connsOf(s)) == 0 })
}
