package tls13

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

func FuzzParseClientHello(f *testing.F) {
	f.Add(rawClientHello(f, "alice", testKey, nil))
	f.Add(rawClientHello(f, "alice", testKey, func(p *clientHelloParams) { p.earlyData = true; p.cookie = []byte{1, 2} }))
	f.Add(unhex(f, rfc8448ResumedClientHello))
	f.Add([]byte{typeClientHello, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		ch, err := parseClientHello(data)
		if err != nil {
			return
		}
		if ch.hasPreSharedKey {
			if len(ch.pskBinders) != len(ch.pskIdentities) || ch.bindersLen > len(ch.raw) {
				t.Fatalf("inconsistent pre_shared_key: %d identities, %d binders, binders length %d of %d",
					len(ch.pskIdentities), len(ch.pskBinders), ch.bindersLen, len(ch.raw))
			}
			_ = ch.truncated()
		}
	})
}

func FuzzParseServerHello(f *testing.F) {
	f.Add(marshalServerHello(&serverHello{random: make([]byte, 32), cipherSuite: TLSAES128GCMSHA256,
		keyShare: keyShare{group: GroupX25519, data: make([]byte, 32)}}))
	f.Add(marshalServerHello(&serverHello{random: helloRetryRequestRandom[:], sessionID: []byte{1, 2, 3},
		cipherSuite: TLSChaCha20Poly1305SHA256, keyShare: keyShare{group: GroupSecp384r1}}))
	f.Add([]byte{typeServerHello, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		sh, err := parseServerHello(data)
		if err != nil {
			return
		}
		if len(sh.random) != 32 {
			t.Fatalf("random of %d bytes", len(sh.random))
		}
		_ = parseEncryptedExtensions(data)
	})
}

// fuzzConn is a net.Conn whose reads come from a byte slice.
type fuzzConn struct {
	r io.Reader
}

func (c *fuzzConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *fuzzConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *fuzzConn) Close() error                     { return nil }
func (c *fuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzRecordDecode feeds bytes to the reader of an established session
// whose keys the seeds were sealed with.
func FuzzRecordDecode(f *testing.F) {
	secret := bytes.Repeat([]byte{7}, 32)
	seal := func(typ uint8, data []byte) []byte {
		cs, _ := newCipherState(SuiteByID(TLSAES128GCMSHA256), secret)
		w := &recordWriter{cipher: cs, buf: make([]byte, 0, maxRecord)}
		_ = w.appendRecord(typ, data)
		return w.buf
	}
	f.Add(seal(recordTypeApplicationData, []byte("hello")))
	f.Add(seal(recordTypeAlert, []byte{1, 0}))
	f.Add(seal(recordTypeHandshake, []byte{typeKeyUpdate, 0, 0, 1, 0}))
	f.Add(seal(recordTypeHandshake, []byte{typeNewSessionTicket, 0, 0, 2}))
	f.Add(plaintextRecord(recordTypeChangeCipherSpec, []byte{1}))
	f.Add([]byte{recordTypeApplicationData, 3, 3, 0x41, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newConn(&fuzzConn{r: bytes.NewReader(data)}, true)
		cs, err := newCipherState(SuiteByID(TLSAES128GCMSHA256), secret)
		if err != nil {
			t.Fatal(err)
		}
		c.in.cipher = cs
		c.out.cipher, _ = newCipherState(SuiteByID(TLSAES128GCMSHA256), secret)
		c.complete = true
		c.in.plaintextAllowed = false
		buf := make([]byte, 100)
		for i := 0; i < 100; i++ {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	})
}
