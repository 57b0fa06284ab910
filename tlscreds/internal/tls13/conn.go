package tls13

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// closeNotifyTimeout bounds how long Close waits to send close_notify to
// a peer that does not read.
const closeNotifyTimeout = 5 * time.Second

// Conn is a TLS 1.3 session over a net.Conn. One goroutine may call Read
// while another calls Write; Close may be called from any goroutine.
type Conn struct {
	conn     net.Conn
	isClient bool
	suite    *Suite
	group    uint16
	identity string
	// helloRetried records that the handshake went through a
	// HelloRetryRequest.
	helloRetried bool

	inMu     sync.Mutex
	in       *recordReader
	hsIn     []byte // bytes of a handshake message not yet complete
	pending  []byte // decrypted application data not yet returned
	readErr  error
	complete bool // handshake done: only protected records from now on

	outMu           sync.Mutex
	out             *recordWriter
	writeErr        error
	closeNotifySent bool
	// keyUpdateOwed is set by the reader when the peer requested a
	// KeyUpdate that the reader could not send at once. The writer then
	// sends it before its next application data (RFC 8446 section 4.6.3).
	keyUpdateOwed atomic.Bool
}

func newConn(conn net.Conn, isClient bool) *Conn {
	return &Conn{conn: conn, isClient: isClient, in: newRecordReader(conn), out: newRecordWriter(conn)}
}

// CipherSuite returns the negotiated suite's IANA name.
func (c *Conn) CipherSuite() string { return c.suite.Name }

// Group returns the negotiated key exchange group's name.
func (c *Conn) Group() string { return GroupName(c.group) }

// HelloRetried reports whether the handshake needed a HelloRetryRequest.
func (c *Conn) HelloRetried() bool { return c.helloRetried }

// Identity returns the PSK identity of the session.
func (c *Conn) Identity() string { return c.identity }

func (c *Conn) LocalAddr() net.Addr                { return c.conn.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr               { return c.conn.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.conn.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// Read returns decrypted application data.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.inMu.Lock()
	defer c.inMu.Unlock()
	for len(c.pending) == 0 {
		if c.readErr != nil {
			return 0, c.readErr
		}
		if err := c.readApplicationRecord(); err != nil {
			if isTemporary(err) {
				return 0, err
			}
			c.readErr = err
			c.failRead(err)
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// failRead sends the alert of a failure the reader detected.
func (c *Conn) failRead(err error) {
	var ae *AlertError
	if errors.As(err, &ae) && !ae.Received {
		c.sendAlert(ae.Alert)
	}
}

func isTemporary(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readApplicationRecord reads one record after the handshake and either
// sets c.pending or handles a post-handshake message or alert.
func (c *Conn) readApplicationRecord() error {
	typ, data, err := c.in.readRecord()
	if err != nil {
		return err
	}
	if len(c.hsIn) > 0 && typ != recordTypeHandshake {
		return alertf(AlertUnexpectedMessage, "handshake message interleaved with record type %d", typ)
	}
	switch typ {
	case recordTypeApplicationData:
		c.pending = data
		return nil
	case recordTypeAlert:
		return c.handleAlert(data)
	case recordTypeHandshake:
		c.hsIn = append(c.hsIn, data...)
		return c.handlePostHandshake()
	}
	return alertf(AlertUnexpectedMessage, "received record type %d after the handshake", typ)
}

// handleAlert turns a received alert into the error Read returns.
func (c *Conn) handleAlert(data []byte) error {
	if len(data) != 2 {
		return alertf(AlertDecodeError, "malformed alert")
	}
	switch a := Alert(data[1]); a {
	case AlertCloseNotify:
		return io.EOF
	case AlertUserCanceled:
		// A close_notify follows (RFC 8446 section 6.1).
		return nil
	default:
		return &AlertError{Alert: a, Received: true}
	}
}

// handlePostHandshake processes the complete handshake messages in c.hsIn.
func (c *Conn) handlePostHandshake() error {
	for {
		msg, ok, err := nextHandshakeMessage(&c.hsIn)
		if err != nil || !ok {
			return err
		}
		switch msg[0] {
		case typeKeyUpdate:
			if err := c.handleKeyUpdate(msg); err != nil {
				return err
			}
		case typeNewSessionTicket:
			if !c.isClient {
				return alertf(AlertUnexpectedMessage, "client sent NewSessionTicket")
			}
			// Tickets are for resumption, which this package does not do.
		default:
			return alertf(AlertUnexpectedMessage, "received handshake message %d after the handshake", msg[0])
		}
	}
}

// nextHandshakeMessage cuts the first complete message off buf; ok is
// false when buf holds only part of one.
func nextHandshakeMessage(buf *[]byte) (msg []byte, ok bool, err error) {
	b := *buf
	if len(b) < 4 {
		return nil, false, nil
	}
	n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	if n > maxHandshakeMessage {
		return nil, false, alertf(AlertUnexpectedMessage, "handshake message of %d bytes, max %d", n, maxHandshakeMessage)
	}
	if len(b) < 4+n {
		return nil, false, nil
	}
	msg = append([]byte(nil), b[:4+n]...)
	*buf = append(b[:0], b[4+n:]...)
	return msg, true, nil
}

func (c *Conn) handleKeyUpdate(msg []byte) error {
	if len(msg) != 5 {
		return alertf(AlertDecodeError, "malformed KeyUpdate")
	}
	requested := msg[4]
	if requested > 1 {
		return alertf(AlertIllegalParameter, "KeyUpdate request_update %d", requested)
	}
	// The new key starts with the next record, so no handshake bytes may
	// remain under the old one (RFC 8446 section 5.1).
	if len(c.hsIn) > 0 {
		return alertf(AlertUnexpectedMessage, "KeyUpdate not at a record boundary")
	}
	next, err := c.in.cipher.next()
	if err != nil {
		return err
	}
	c.in.cipher = next
	if requested == 1 {
		c.keyUpdateOwed.Store(true)
		// Reply now unless a Write holds the lock, because that Write
		// sends the reply before its data.
		if c.outMu.TryLock() {
			err := c.sendOwedKeyUpdateLocked()
			c.outMu.Unlock()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// Write encrypts p into full records and writes them in batches.
func (c *Conn) Write(p []byte) (int, error) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.writeErr != nil {
		return 0, c.writeErr
	}

	written := 0
	for written < len(p) {
		if err := c.sendOwedKeyUpdateLocked(); err != nil {
			return written, err
		}
		if c.out.cipher.seq >= keyUpdateRecords {
			if err := c.sendKeyUpdateLocked(false); err != nil {
				return written, err
			}
		}
		// Seal one batch of records, then write it.
		batch := 0
		for batch < writeBatchRecords*maxPlaintext && written+batch < len(p) {
			n := min(len(p)-written-batch, maxPlaintext)
			if err := c.out.appendRecord(recordTypeApplicationData, p[written+batch:written+batch+n]); err != nil {
				return written, c.setWriteErr(err)
			}
			batch += n
		}
		if err := c.out.flush(); err != nil {
			return written, c.setWriteErr(err)
		}
		written += batch
	}
	return written, nil
}

// setWriteErr makes a write failure permanent: after a partial record
// the stream cannot continue.
func (c *Conn) setWriteErr(err error) error {
	c.writeErr = err
	return err
}

func (c *Conn) sendOwedKeyUpdateLocked() error {
	if !c.keyUpdateOwed.Swap(false) {
		return nil
	}
	return c.sendKeyUpdateLocked(false)
}

// sendKeyUpdateLocked sends a KeyUpdate under the current key and switches
// the write side to the next one.
func (c *Conn) sendKeyUpdateLocked(requestPeer bool) error {
	if c.writeErr != nil {
		return c.writeErr
	}
	req := byte(0)
	if requestPeer {
		req = 1
	}
	if err := c.out.appendRecord(recordTypeHandshake, []byte{typeKeyUpdate, 0, 0, 1, req}); err != nil {
		return c.setWriteErr(err)
	}
	if err := c.out.flush(); err != nil {
		return c.setWriteErr(err)
	}
	next, err := c.out.cipher.next()
	if err != nil {
		return c.setWriteErr(err)
	}
	c.out.cipher = next
	return nil
}

// UpdateKeys sends a KeyUpdate and switches to the next write key; with
// requestPeer the peer is asked to update its key too.
func (c *Conn) UpdateKeys(requestPeer bool) error {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	return c.sendKeyUpdateLocked(requestPeer)
}

// sendAlert sends a fatal alert, or close_notify as a warning, and makes
// further writes fail.
func (c *Conn) sendAlert(a Alert) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	c.sendAlertLocked(a)
}

func (c *Conn) sendAlertLocked(a Alert) error {
	if c.writeErr != nil {
		return c.writeErr
	}
	level := byte(2) // fatal
	if a == AlertCloseNotify || a == AlertUserCanceled {
		level = 1 // warning
	}
	err := c.out.appendRecord(recordTypeAlert, []byte{level, byte(a)})
	if err == nil {
		err = c.out.flush()
	}
	if err != nil {
		return c.setWriteErr(err)
	}
	if a == AlertCloseNotify {
		c.closeNotifySent = true
		c.writeErr = fmt.Errorf("tls: write after close_notify: %w", net.ErrClosed)
	} else {
		c.writeErr = fmt.Errorf("tls: write after alert %s: %w", a, net.ErrClosed)
	}
	return nil
}

// CloseWrite sends close_notify and leaves the connection open for reading.
func (c *Conn) CloseWrite() error {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.closeNotifySent {
		return nil
	}
	return c.sendAlertLocked(AlertCloseNotify)
}

// Close sends close_notify, waiting at most closeNotifyTimeout for a peer
// that does not read, and closes the connection.
func (c *Conn) Close() error {
	// The deadline also releases a Write blocked on a stalled peer, so
	// that the lock below is obtained.
	_ = c.conn.SetWriteDeadline(time.Now().Add(closeNotifyTimeout))
	c.outMu.Lock()
	var alertErr error
	if !c.closeNotifySent && c.writeErr == nil {
		alertErr = c.sendAlertLocked(AlertCloseNotify)
	}
	c.writeErr = net.ErrClosed
	c.outMu.Unlock()

	if err := c.conn.Close(); err != nil {
		return err
	}
	if alertErr != nil {
		return fmt.Errorf("tls: send close_notify: %w", alertErr)
	}
	return nil
}
