package tlscreds

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// loopbackPair returns both ends of a loopback TCP connection.
func loopbackPair(t *testing.T) (net.Conn, net.Conn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	server := <-accepted
	require.NotNil(t, server)
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestBatchConnKeepsOrder writes through a batch that overflows, a write
// larger than a batch and a direct write after the batch, and checks the
// peer reads every byte in order.
func TestBatchConnKeepsOrder(t *testing.T) {
	client, server := loopbackPair(t)
	b := &batchConn{Conn: client}

	var want bytes.Buffer
	write := func(p []byte) {
		n, err := b.Write(p)
		require.NoError(t, err)
		require.Equal(t, len(p), n)
		want.Write(p)
	}
	chunk := func(fill byte, n int) []byte { return bytes.Repeat([]byte{fill}, n) }

	got := make(chan []byte, 1)
	go func() {
		data, _ := io.ReadAll(server)
		got <- data
	}()

	write([]byte("handshake"))
	b.startBatch()
	for i := range 10 {
		write(chunk(byte('a'+i), 16<<10))
	}
	write(chunk('z', batchBytes+1))
	write([]byte("tail"))
	require.NoError(t, b.endBatch())
	write([]byte("direct"))
	require.NoError(t, client.Close())

	assert.Equal(t, want.Bytes(), <-got)
}

func TestBatchConnFailedFlushSticks(t *testing.T) {
	client, _ := loopbackPair(t)
	b := &batchConn{Conn: client}
	b.startBatch()
	_, err := b.Write([]byte("record"))
	require.NoError(t, err)
	require.NoError(t, client.Close())

	assert.Error(t, b.endBatch())
	_, err = b.Write([]byte("more"))
	assert.Error(t, err, "writes after a lost batch must fail")
}
