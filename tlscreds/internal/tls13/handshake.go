package tls13

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// Config configures one handshake.
type Config struct {
	// CipherSuites narrows the suites to these code points; nil allows
	// every suite whose hash matches the PSK's (SHA-256).
	CipherSuites []uint16
	// Groups narrows the key exchange groups, in preference order; nil
	// means DefaultGroups.
	Groups []uint16

	// Identity and Key are the client's PSK.
	Identity string
	Key      []byte
	// LookupKey returns the server's key for identity, or nil when the
	// identity is unknown.
	LookupKey func(identity string) []byte

	// Rand is the source of randomness; nil means crypto/rand.
	Rand io.Reader
}

func (cfg *Config) rand() io.Reader {
	if cfg.Rand != nil {
		return cfg.Rand
	}
	return rand.Reader
}

// pskSuite is the suite whose hash an external PSK is bound to. GnuTLS
// and OpenSSL bind psktool-style keys to SHA-256 (RFC 8446 section
// 4.2.11), so only SHA-256 suites can use them.
var pskSuite = SuiteByID(TLSAES128GCMSHA256)

// suites returns the allowed suites in local preference order.
func (cfg *Config) suites() []uint16 {
	var out []uint16
	for _, id := range defaultSuiteOrder() {
		if SuiteByID(id).HashLen != pskSuite.HashLen {
			continue
		}
		if cfg.CipherSuites != nil && !slices.Contains(cfg.CipherSuites, id) {
			continue
		}
		out = append(out, id)
	}
	return out
}

func (cfg *Config) groups() []uint16 {
	if cfg.Groups == nil {
		return DefaultGroups
	}
	var out []uint16
	for _, g := range cfg.Groups {
		if curveForGroup(g) != nil {
			out = append(out, g)
		}
	}
	return out
}

func curveForGroup(g uint16) ecdh.Curve {
	switch g {
	case GroupX25519:
		return ecdh.X25519()
	case GroupSecp256r1:
		return ecdh.P256()
	case GroupSecp384r1:
		return ecdh.P384()
	}
	return nil
}

// HandshakeError is a failed handshake. Identity is the PSK identity the
// peer offered, when the handshake got that far.
type HandshakeError struct {
	Identity string
	Err      error
}

func (e *HandshakeError) Error() string { return e.Err.Error() }
func (e *HandshakeError) Unwrap() error { return e.Err }

// watchContext applies ctx's deadline to conn and interrupts blocked I/O
// when ctx is cancelled. The returned function undoes both.
func watchContext(ctx context.Context, conn net.Conn) func() {
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() {
		_ = conn.SetDeadline(time.Unix(1, 0))
	})
	return func() {
		stop()
		_ = conn.SetDeadline(time.Time{})
	}
}

// contextError reports ctx's error in place of the I/O error it caused.
func contextError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && isTemporary(err) {
		return fmt.Errorf("tls: handshake: %w", ctxErr)
	}
	return err
}

// readHandshakeMessage returns the next handshake message during the
// handshake, skipping change_cipher_spec records.
func (c *Conn) readHandshakeMessage() ([]byte, error) {
	for {
		msg, ok, err := nextHandshakeMessage(&c.hsIn)
		if err != nil {
			return nil, err
		}
		if ok {
			return msg, nil
		}
		typ, data, err := c.in.readRecord()
		if err == io.EOF {
			return nil, fmt.Errorf("tls: peer closed the connection during the handshake: %w", io.ErrUnexpectedEOF)
		}
		if err != nil {
			return nil, err
		}
		switch typ {
		case recordTypeHandshake:
			if len(data) == 0 {
				return nil, alertf(AlertUnexpectedMessage, "received an empty handshake record")
			}
			c.hsIn = append(c.hsIn, data...)
		case recordTypeChangeCipherSpec:
			// Middlebox compatibility records are dropped unread (RFC
			// 8446 section 5), but only in their one valid form.
			if len(data) != 1 || data[0] != 1 || c.in.cipher != nil && !c.in.plaintextAllowed {
				return nil, alertf(AlertUnexpectedMessage, "received an invalid change_cipher_spec record")
			}
		case recordTypeAlert:
			if err := c.handleAlert(data); err != nil {
				if err == io.EOF {
					return nil, fmt.Errorf("tls: peer sent close_notify during the handshake: %w", io.ErrUnexpectedEOF)
				}
				return nil, err
			}
		default:
			return nil, alertf(AlertUnexpectedMessage, "received record type %d during the handshake", typ)
		}
	}
}

// expectMessage reads the next handshake message and checks its type.
func (c *Conn) expectMessage(msgType uint8, name string) ([]byte, error) {
	msg, err := c.readHandshakeMessage()
	if err != nil {
		return nil, err
	}
	if msg[0] != msgType {
		return nil, alertf(AlertUnexpectedMessage, "expected %s, received handshake message %d", name, msg[0])
	}
	return msg, nil
}

// keysChangeOnRead switches the read side to a new secret. A message that
// started under the old key may not continue under the new one.
func (c *Conn) keysChangeOnRead(s *Suite, secret []byte) error {
	if len(c.hsIn) > 0 {
		return alertf(AlertUnexpectedMessage, "handshake message spans a key change")
	}
	cs, err := newCipherState(s, secret)
	if err != nil {
		return err
	}
	c.in.cipher = cs
	return nil
}

func (c *Conn) keysChangeOnWrite(s *Suite, secret []byte) error {
	cs, err := newCipherState(s, secret)
	if err != nil {
		return err
	}
	c.out.cipher = cs
	return nil
}

// finishHandshake switches to application-data-only reading.
func (c *Conn) finishHandshake() error {
	if len(c.hsIn) > 0 {
		return alertf(AlertUnexpectedMessage, "handshake data after Finished under the handshake key")
	}
	c.in.plaintextAllowed = false
	c.in.earlyDataBudget = 0
	c.complete = true
	return nil
}

// abort sends the alert that err carries, if any, and wraps err.
func (c *Conn) abort(err error, identity string) error {
	var ae *AlertError
	if errors.As(err, &ae) && !ae.Received {
		c.sendAlert(ae.Alert)
	}
	return &HandshakeError{Identity: identity, Err: err}
}

// transcript accumulates the handshake messages and hashes them on demand.
type transcript struct {
	suite *Suite
	msgs  []byte
}

func (t *transcript) add(msgs ...[]byte) {
	for _, m := range msgs {
		t.msgs = append(t.msgs, m...)
	}
}

func (t *transcript) sum() []byte {
	h := t.suite.Hash()
	h.Write(t.msgs)
	return h.Sum(nil)
}

// sumWith hashes the transcript followed by extra, without adding extra.
func (t *transcript) sumWith(extra []byte) []byte {
	h := t.suite.Hash()
	h.Write(t.msgs)
	h.Write(extra)
	return h.Sum(nil)
}
