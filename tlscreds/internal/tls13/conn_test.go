package tls13

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var testKey = bytes.Repeat([]byte{0x5a}, 32)

func serverConfig() *Config {
	return &Config{LookupKey: func(id string) []byte {
		if id == "alice" {
			return testKey
		}
		return nil
	}}
}

func clientConfig() *Config {
	return &Config{Identity: "alice", Key: testKey}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	server = <-accepted
	require.NotNil(t, server)
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

type handshakeResult struct {
	conn *Conn
	err  error
}

// handshakePair runs both handshakes over loopback TCP.
func handshakePair(t testing.TB, ccfg, scfg *Config) (client, server handshakeResult) {
	t.Helper()
	rawClient, rawServer := tcpPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan handshakeResult, 1)
	go func() {
		c, err := ServerHandshake(ctx, rawServer, scfg)
		if err != nil {
			rawServer.Close()
		}
		done <- handshakeResult{c, err}
	}()
	c, err := ClientHandshake(ctx, rawClient, ccfg)
	if err != nil {
		rawClient.Close()
	}
	client = handshakeResult{c, err}
	server = <-done
	return client, server
}

func TestHandshakeLoopback(t *testing.T) {
	client, server := handshakePair(t, clientConfig(), serverConfig())
	require.NoError(t, client.err)
	require.NoError(t, server.err)
	assert.Equal(t, "alice", server.conn.Identity())
	assert.Equal(t, client.conn.CipherSuite(), server.conn.CipherSuite())
	assert.Equal(t, "x25519", server.conn.Group())

	msg := make([]byte, 100000)
	_, _ = rand.Read(msg)
	go func() {
		_, _ = client.conn.Write(msg)
	}()
	got := make([]byte, len(msg))
	_, err := io.ReadFull(server.conn, got)
	require.NoError(t, err)
	assert.Equal(t, msg, got)

	require.NoError(t, client.conn.Close())
	_, err = server.conn.Read(got)
	assert.ErrorIs(t, err, io.EOF)
}

func TestHandshakeWrongKey(t *testing.T) {
	ccfg := clientConfig()
	ccfg.Key = bytes.Repeat([]byte{1}, 32)
	client, server := handshakePair(t, ccfg, serverConfig())
	var ae *AlertError
	require.True(t, errors.As(server.err, &ae), "server error %v", server.err)
	assert.Equal(t, AlertDecryptError, ae.Alert)
	require.True(t, errors.As(client.err, &ae), "client error %v", client.err)
	assert.True(t, ae.Received)
	assert.Equal(t, AlertDecryptError, ae.Alert)
}
