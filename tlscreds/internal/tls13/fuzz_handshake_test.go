package tls13

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// The two handshake fuzz targets drive a whole handshake with the peer's
// bytes taken from the fuzzer: record framing, handshake message
// reassembly, ClientHello or ServerHello processing, HelloRetryRequest
// and alerts. Writes go nowhere. The peer's Finished cannot be forged, so
// a handshake that succeeds means the fuzzer broke the key schedule.

func FuzzServerHandshake(f *testing.F) {
	hello := rawClientHello(f, "alice", testKey, nil)
	ccs := plaintextRecord(recordTypeChangeCipherSpec, []byte{1})
	f.Add(plaintextRecord(recordTypeHandshake, hello))
	f.Add(concatRecords(plaintextRecord(recordTypeHandshake, hello), ccs,
		[]byte{recordTypeApplicationData, 3, 3, 0, 21}, bytes.Repeat([]byte{9}, 21)))
	// The ClientHello split over two records, which the reader must
	// reassemble.
	f.Add(concatRecords(plaintextRecord(recordTypeHandshake, hello[:40]), plaintextRecord(recordTypeHandshake, hello[40:])))
	// A key share only for X448 (group 30), which the server lacks, leads
	// to a HelloRetryRequest for X25519, so the fuzzer also reaches the
	// second ClientHello.
	f.Add(plaintextRecord(recordTypeHandshake, rawClientHello(f, "alice", testKey, func(p *clientHelloParams) {
		p.groups = []uint16{30, GroupX25519}
		p.keyShare = keyShare{group: 30, data: bytes.Repeat([]byte{4}, 56)}
	})))
	f.Add(plaintextRecord(recordTypeHandshake, rawClientHello(f, "mallory", testKey, nil)))
	f.Add(plaintextRecord(recordTypeHandshake, rawClientHello(f, "alice", testKey, func(p *clientHelloParams) { p.earlyData = true })))
	f.Add(plaintextRecord(recordTypeAlert, []byte{2, 40}))
	f.Add([]byte("IHAVEOPT\x00\x00\x00\x01\x00\x00\x00\x00"))

	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ServerHandshake(context.Background(), &fuzzConn{r: bytes.NewReader(data)}, serverConfig())
		if err == nil {
			c.Close()
			t.Fatalf("server handshake succeeded on %d fuzzed bytes", len(data))
		}
		var he *HandshakeError
		if !errors.As(err, &he) {
			t.Fatalf("server handshake error %T is not a *HandshakeError: %v", err, err)
		}
	})
}

func FuzzClientHandshake(f *testing.F) {
	serverHelloFor := func(sh *serverHello) []byte {
		return plaintextRecord(recordTypeHandshake, marshalServerHello(sh))
	}
	hello := serverHelloFor(&serverHello{random: make([]byte, 32), cipherSuite: TLSAES128GCMSHA256,
		keyShare: keyShare{group: GroupX25519, data: bytes.Repeat([]byte{9}, 32)}, hasKeyShare: true, hasPreSharedKey: true})
	f.Add(hello)
	f.Add(concatRecords(hello, plaintextRecord(recordTypeChangeCipherSpec, []byte{1}),
		[]byte{recordTypeApplicationData, 3, 3, 0, 40}, bytes.Repeat([]byte{7}, 40)))
	f.Add(serverHelloFor(&serverHello{random: helloRetryRequestRandom[:], cipherSuite: TLSAES128GCMSHA256,
		keyShare: keyShare{group: GroupSecp256r1}, hasKeyShare: true, cookie: []byte{1, 2, 3}}))
	f.Add(serverHelloFor(&serverHello{random: make([]byte, 32), cipherSuite: 0x1302,
		keyShare: keyShare{group: GroupX25519, data: make([]byte, 32)}, hasKeyShare: true}))
	f.Add(plaintextRecord(recordTypeAlert, []byte{2, 51}))
	f.Add([]byte("NBDMAGIC"))

	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ClientHandshake(context.Background(), &fuzzConn{r: bytes.NewReader(data)}, clientConfig())
		if err == nil {
			c.Close()
			t.Fatalf("client handshake succeeded on %d fuzzed bytes", len(data))
		}
		var he *HandshakeError
		if !errors.As(err, &he) {
			t.Fatalf("client handshake error %T is not a *HandshakeError: %v", err, err)
		}
	})
}

func concatRecords(records ...[]byte) []byte { return bytes.Join(records, nil) }
