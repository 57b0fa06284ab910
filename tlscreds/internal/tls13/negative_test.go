package tls13

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawClientHello builds a ClientHello for identity with a valid binder
// under key, then lets mutate change the parameters first.
func rawClientHello(t testing.TB, identity string, key []byte, mutate func(*clientHelloParams)) []byte {
	t.Helper()
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	require.NoError(t, err)
	p := &clientHelloParams{
		random:       make([]byte, 32),
		cipherSuites: []uint16{TLSAES128GCMSHA256, TLSChaCha20Poly1305SHA256},
		groups:       []uint16{GroupX25519},
		keyShare:     keyShare{group: GroupX25519, data: priv.PublicKey().Bytes()},
		identity:     []byte(identity),
		binderLen:    32,
	}
	if mutate != nil {
		mutate(p)
	}
	ch := marshalClientHello(p)
	h := pskSuite.Hash
	d := h()
	d.Write(ch[:len(ch)-35])
	binder := finishedMAC(h, binderKey(h, earlySecret(h, key), true), d.Sum(nil))
	copy(ch[len(ch)-32:], binder)
	return ch
}

// plaintextRecord frames a payload as an unprotected record.
func plaintextRecord(typ uint8, payload []byte) []byte {
	return append([]byte{typ, 3, 3, byte(len(payload) >> 8), byte(len(payload))}, payload...)
}

// serverResponse sends raw bytes to a fresh PSK server and returns the
// server's handshake error and the first record it sent back.
func serverResponse(t *testing.T, send []byte) (error, []byte) {
	t.Helper()
	rawClient, rawServer := tcpPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := ServerHandshake(ctx, rawServer, serverConfig())
		rawServer.Close()
		done <- err
	}()
	_, err := rawClient.Write(send)
	require.NoError(t, err)
	require.NoError(t, rawClient.(*net.TCPConn).CloseWrite())
	require.NoError(t, rawClient.SetReadDeadline(time.Now().Add(10*time.Second)))
	reply, _ := io.ReadAll(rawClient)
	return <-done, reply
}

// alertRecord is the unprotected fatal alert record a server sends before
// it has keys.
func alertRecord(a Alert) []byte {
	return plaintextRecord(recordTypeAlert, []byte{2, byte(a)})
}

func TestServerRejectsClientHello(t *testing.T) {
	cases := []struct {
		name   string
		hello  []byte
		alert  Alert
		reason string
	}{
		{"UnknownIdentity", rawClientHello(t, "mallory", testKey, nil), AlertUnknownPSKIdentity, `unknown PSK identity "mallory"`},
		{"WrongKey", rawClientHello(t, "alice", bytes.Repeat([]byte{1}, 32), nil), AlertDecryptError, "binder"},
		{"NoDHEMode", rawClientHello(t, "alice", testKey, func(p *clientHelloParams) { p.pskModes = []uint8{0} }),
			AlertHandshakeFailure, "psk_dhe_ke"},
		{"UnsupportedGroupsOnly", rawClientHello(t, "alice", testKey, func(p *clientHelloParams) {
			p.groups = []uint16{30} // x448
			p.keyShare = keyShare{group: 30, data: make([]byte, 56)}
		}), AlertHandshakeFailure, "no key exchange group"},
		{"UnsupportedSuitesOnly", rawClientHello(t, "alice", testKey, func(p *clientHelloParams) {
			p.cipherSuites = []uint16{TLSAES256GCMSHA384, 0x1304}
		}), AlertHandshakeFailure, "no cipher suite"},
		{"InvalidKeyShare", rawClientHello(t, "alice", testKey, func(p *clientHelloParams) {
			p.groups = []uint16{GroupSecp256r1}
			p.keyShare = keyShare{group: GroupSecp256r1, data: bytes.Repeat([]byte{4}, 65)}
		}), AlertIllegalParameter, "invalid secp256r1 key share"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err, reply := serverResponse(t, plaintextRecord(recordTypeHandshake, tc.hello))
			var ae *AlertError
			require.True(t, errors.As(err, &ae), "error %v", err)
			assert.Equal(t, tc.alert, ae.Alert)
			assert.Contains(t, err.Error(), tc.reason)
			assert.Equal(t, alertRecord(tc.alert), reply)
		})
	}
}

func TestServerRejectsTamperedBinder(t *testing.T) {
	ch := rawClientHello(t, "alice", testKey, nil)
	ch[len(ch)-1] ^= 1
	err, reply := serverResponse(t, plaintextRecord(recordTypeHandshake, ch))
	var ae *AlertError
	require.True(t, errors.As(err, &ae), "error %v", err)
	assert.Equal(t, AlertDecryptError, ae.Alert)
	assert.Equal(t, alertRecord(AlertDecryptError), reply)
}

func TestServerIdentityInHandshakeError(t *testing.T) {
	ch := rawClientHello(t, "alice", bytes.Repeat([]byte{1}, 32), nil)
	err, _ := serverResponse(t, plaintextRecord(recordTypeHandshake, ch))
	var he *HandshakeError
	require.True(t, errors.As(err, &he))
	assert.Equal(t, "alice", he.Identity)
}

func TestServerAlertMidHandshake(t *testing.T) {
	err, _ := serverResponse(t, alertRecord(AlertHandshakeFailure))
	var ae *AlertError
	require.True(t, errors.As(err, &ae), "error %v", err)
	assert.True(t, ae.Received)
	assert.Equal(t, AlertHandshakeFailure, ae.Alert)
	assert.EqualError(t, err, "tls: peer sent alert handshake_failure")
}

func TestServerTruncatedClientHello(t *testing.T) {
	rec := plaintextRecord(recordTypeHandshake, rawClientHello(t, "alice", testKey, nil))
	err, _ := serverResponse(t, rec[:len(rec)-10])
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestServerOversizedPlaintextRecord(t *testing.T) {
	hdr := []byte{recordTypeHandshake, 3, 3, 0x40, 0x01} // 16385 bytes
	err, reply := serverResponse(t, hdr)
	var ae *AlertError
	require.True(t, errors.As(err, &ae), "error %v", err)
	assert.Equal(t, AlertRecordOverflow, ae.Alert)
	assert.Equal(t, alertRecord(AlertRecordOverflow), reply)
}

func TestServerApplicationDataBeforeHandshake(t *testing.T) {
	err, _ := serverResponse(t, plaintextRecord(recordTypeApplicationData, []byte("hello")))
	var ae *AlertError
	require.True(t, errors.As(err, &ae), "error %v", err)
	assert.Equal(t, AlertUnexpectedMessage, ae.Alert)
}

// TestServerHelloRetryInternal drives a HelloRetryRequest between this
// package's own client and server.
func TestServerHelloRetryInternal(t *testing.T) {
	scfg := serverConfig()
	scfg.Groups = []uint16{GroupSecp256r1}
	client, server := handshakePair(t, clientConfig(), scfg)
	require.NoError(t, client.err)
	require.NoError(t, server.err)
	assert.True(t, client.conn.HelloRetried())
	assert.True(t, server.conn.HelloRetried())
	assert.Equal(t, "secp256r1", client.conn.Group())
}

// established returns a finished session pair and the client's raw
// connection, for tests that inject bytes under the session.
func established(t *testing.T) (client, server *Conn, rawClient net.Conn) {
	t.Helper()
	rawClient, rawServer := tcpPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan handshakeResult, 1)
	go func() {
		c, err := ServerHandshake(ctx, rawServer, serverConfig())
		done <- handshakeResult{c, err}
	}()
	client, err := ClientHandshake(ctx, rawClient, clientConfig())
	require.NoError(t, err)
	r := <-done
	require.NoError(t, r.err)
	require.NoError(t, r.conn.SetDeadline(time.Now().Add(10*time.Second)))
	return client, r.conn, rawClient
}

func TestRecordTruncatedAfterHandshake(t *testing.T) {
	client, server, raw := established(t)
	require.NoError(t, client.out.appendRecord(recordTypeApplicationData, []byte("hello")))
	rec := client.out.buf
	_, err := raw.Write(rec[:len(rec)-3])
	require.NoError(t, err)
	raw.(*net.TCPConn).CloseWrite()
	_, err = server.Read(make([]byte, 10))
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestRecordOversizedCiphertext(t *testing.T) {
	_, server, raw := established(t)
	_, err := raw.Write([]byte{recordTypeApplicationData, 3, 3, 0x41, 0x01}) // 16641 bytes
	require.NoError(t, err)
	_, err = server.Read(make([]byte, 10))
	var ae *AlertError
	require.True(t, errors.As(err, &ae), "error %v", err)
	assert.Equal(t, AlertRecordOverflow, ae.Alert)
}

func TestRecordOversizedPlaintext(t *testing.T) {
	client, server, raw := established(t)
	require.NoError(t, client.out.appendRecord(recordTypeApplicationData, make([]byte, maxPlaintext+1)))
	_, err := raw.Write(client.out.buf)
	require.NoError(t, err)
	_, err = server.Read(make([]byte, 10))
	var ae *AlertError
	require.True(t, errors.As(err, &ae), "error %v", err)
	assert.Equal(t, AlertRecordOverflow, ae.Alert)
}

func TestRecordTamperedCiphertext(t *testing.T) {
	client, server, raw := established(t)
	require.NoError(t, client.out.appendRecord(recordTypeApplicationData, []byte("hello")))
	rec := client.out.buf
	rec[len(rec)-1] ^= 0x80
	_, err := raw.Write(rec)
	require.NoError(t, err)
	_, err = server.Read(make([]byte, 10))
	var ae *AlertError
	require.True(t, errors.As(err, &ae), "error %v", err)
	assert.Equal(t, AlertBadRecordMAC, ae.Alert)
	// The client learns why.
	_, err = client.Read(make([]byte, 10))
	require.True(t, errors.As(err, &ae), "error %v", err)
	assert.True(t, ae.Received)
	assert.Equal(t, AlertBadRecordMAC, ae.Alert)
}

func TestRecordPaddingStripped(t *testing.T) {
	client, server, raw := established(t)
	// Pad by sealing the payload with zeros after the content type.
	padded := append([]byte("hello"), recordTypeApplicationData, 0, 0, 0, 0)
	cs := client.out.cipher
	nonce, err := cs.currentNonce()
	require.NoError(t, err)
	n := len(padded) + cs.aead.Overhead()
	hdr := []byte{recordTypeApplicationData, 3, 3, byte(n >> 8), byte(n)}
	rec := cs.aead.Seal(append([]byte(nil), hdr...), nonce, padded, hdr)
	cs.seq++
	_, err = raw.Write(rec)
	require.NoError(t, err)
	got := make([]byte, 10)
	m, err := server.Read(got)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got[:m]))
}

func TestRecordChangeCipherSpecAfterHandshake(t *testing.T) {
	_, server, raw := established(t)
	_, err := raw.Write(plaintextRecord(recordTypeChangeCipherSpec, []byte{1}))
	require.NoError(t, err)
	_, err = server.Read(make([]byte, 10))
	var ae *AlertError
	require.True(t, errors.As(err, &ae), "error %v", err)
	assert.Equal(t, AlertUnexpectedMessage, ae.Alert)
}

func TestRecordSequenceExhausted(t *testing.T) {
	client, server, _ := established(t)
	server.in.cipher.seq = ^uint64(0)
	_, err := client.Write([]byte("x"))
	require.NoError(t, err)
	_, err = server.Read(make([]byte, 1))
	assert.ErrorIs(t, err, errSequenceExhausted)

	client.out.cipher.seq = ^uint64(0)
	_, err = client.Write([]byte("x"))
	assert.ErrorIs(t, err, errSequenceExhausted)
}

func TestKeyUpdateBothDirections(t *testing.T) {
	client, server, _ := established(t)
	clientWrite, serverWrite := client.out.cipher.secret, server.out.cipher.secret

	require.NoError(t, client.UpdateKeys(true))
	_, err := client.Write([]byte("after update"))
	require.NoError(t, err)
	got := make([]byte, 20)
	n, err := server.Read(got)
	require.NoError(t, err)
	assert.Equal(t, "after update", string(got[:n]))
	assert.NotEqual(t, serverWrite, server.out.cipher.secret, "server did not answer update_requested")

	_, err = server.Write([]byte("reply"))
	require.NoError(t, err)
	require.NoError(t, client.SetReadDeadline(time.Now().Add(10*time.Second)))
	n, err = client.Read(got)
	require.NoError(t, err)
	assert.Equal(t, "reply", string(got[:n]))
	assert.NotEqual(t, clientWrite, client.out.cipher.secret)
	assert.Equal(t, client.out.cipher.secret, server.in.cipher.secret)
	assert.Equal(t, server.out.cipher.secret, client.in.cipher.secret)
}

func TestCloseSendsCloseNotify(t *testing.T) {
	client, server, _ := established(t)
	require.NoError(t, server.Close())
	require.NoError(t, client.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err := client.Read(make([]byte, 1))
	assert.Equal(t, io.EOF, err)
}

// TestServerSkipsRefusedEarlyData sends a ClientHello offering 0-RTT and
// then a record the server cannot decrypt. The server rejects early data,
// skips the record and completes the handshake.
func TestServerSkipsRefusedEarlyData(t *testing.T) {
	rawClient, rawServer := tcpPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan handshakeResult, 1)
	go func() {
		c, err := ServerHandshake(ctx, rawServer, serverConfig())
		done <- handshakeResult{c, err}
	}()
	hs := &clientHandshake{c: newConn(rawClient, true), cfg: clientConfig(), transcript: transcript{suite: pskSuite}}
	hs.params.earlyData = true
	hs.suites, hs.groups = hs.cfg.suites(), hs.cfg.groups()
	hs.early = earlySecret(pskSuite.Hash, testKey)
	require.NoError(t, hs.sendClientHello(GroupX25519, nil))
	junk := make([]byte, 100)
	_, _ = rand.Read(junk)
	_, err := rawClient.Write(append([]byte{recordTypeApplicationData, 3, 3, 0, 100}, junk...))
	require.NoError(t, err)

	sh, err := hs.readServerHello()
	require.NoError(t, err)
	secrets, err := hs.processServerHello(sh)
	require.NoError(t, err)
	require.NoError(t, hs.readServerFlight(secrets))
	r := <-done
	require.NoError(t, r.err)
}

// TestServerClientHelloAcrossRecords sends the ClientHello in three
// records, as a peer may fragment handshake messages.
func TestServerClientHelloAcrossRecords(t *testing.T) {
	rawClient, rawServer := tcpPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan handshakeResult, 1)
	go func() {
		c, err := ServerHandshake(ctx, rawServer, serverConfig())
		done <- handshakeResult{c, err}
	}()
	hs := &clientHandshake{c: newConn(rawClient, true), cfg: clientConfig(), transcript: transcript{suite: pskSuite}}
	hs.suites, hs.groups = hs.cfg.suites(), hs.cfg.groups()
	hs.early = earlySecret(pskSuite.Hash, testKey)
	// Capture the ClientHello instead of sending it in one record.
	hs.c.out.conn = discardConn{rawClient}
	require.NoError(t, hs.sendClientHello(GroupX25519, nil))
	hs.c.out.conn = rawClient
	ch := hs.transcript.msgs
	for _, part := range [][]byte{ch[:3], ch[3:100], ch[100:]} {
		_, err := rawClient.Write(plaintextRecord(recordTypeHandshake, part))
		require.NoError(t, err)
	}

	sh, err := hs.readServerHello()
	require.NoError(t, err)
	secrets, err := hs.processServerHello(sh)
	require.NoError(t, err)
	require.NoError(t, hs.readServerFlight(secrets))
	r := <-done
	require.NoError(t, r.err)
}

// discardConn drops writes, so that a test can capture a message.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }
