package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// serverConn is one client connection: its negotiation state and, once in
// transmission, the export it serves.
type serverConn struct {
	srv  *Server
	raw  net.Conn
	peer string
	log  hclog.Logger

	// mu guards conn, inTransmission and shuttingDown, which Shutdown and
	// abort read from other goroutines.
	mu             sync.Mutex
	conn           net.Conn // raw, or the TLS session after STARTTLS
	inTransmission bool
	shuttingDown   bool
	closed         bool
	// shutdownStarted mirrors shuttingDown for the reader's per-request
	// check without the mutex.
	shutdownStarted atomic.Bool
	// inFlight counts requests read but not yet replied to.
	inFlight atomic.Int64

	// Negotiation state. STARTTLS resets structured and meta.
	handshakeDeadline time.Time
	noZeroes          bool
	tls               *tlscreds.Info
	structured        bool
	meta              metaSelection
	optionCount       int

	// Set when the handshake ends with an export.
	export *Export
	flags  proto.TransmissionFlags
}

func (s *Server) newServerConn(c net.Conn) *serverConn {
	peer := c.RemoteAddr().String()
	if peer == "" || peer == "@" {
		// Unix socket peers have no address; name the socket instead.
		peer = "unix:" + c.LocalAddr().String()
	}
	return &serverConn{
		srv:  s,
		raw:  c,
		conn: c,
		peer: peer,
		log:  s.log.With("peer", peer),
	}
}

// errConnDone ends a connection without a log line of its own: the client
// aborted, disconnected or the reason was already logged.
var errConnDone = errors.New("nbd: connection done")

// serve runs the handshake and then transmission, and closes the
// connection.
func (c *serverConn) serve(ctx context.Context) {
	defer c.close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if err := c.handshake(ctx); err != nil {
		c.logHandshakeEnd(err)
		return
	}
	c.srv.markNegotiated()

	tlsOn := "no"
	if c.tls != nil {
		tlsOn = "yes"
	}
	c.log.Info("client connected", "export", c.export.Name, "tls", tlsOn, "flags", c.flags.Names())
	err := c.transmit(ctx)
	switch {
	case err == nil || errors.Is(err, errConnDone):
		c.log.Info("client disconnected", "export", c.export.Name)
	default:
		c.log.Info("client disconnected", "export", c.export.Name, "reason", err)
	}
}

// logHandshakeEnd writes the one line a failed or aborted handshake gets.
func (c *serverConn) logHandshakeEnd(err error) {
	switch {
	case errors.Is(err, errConnDone):
		c.log.Debug("handshake ended")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		c.log.Info("handshake failed", "reason", "client closed the connection")
	case isTimeout(err) && c.isShuttingDown():
		c.log.Info("handshake failed", "reason", "server shutting down")
	case isTimeout(err):
		c.log.Warn("handshake failed", "reason", fmt.Sprintf("not finished within the handshake limit of %s", c.srv.cfg.HandshakeLimit))
	default:
		c.log.Warn("handshake failed", "reason", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// current returns the connection negotiation and transmission use now.
func (c *serverConn) current() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

func (c *serverConn) setConn(conn net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
}

func (c *serverConn) isShuttingDown() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.shuttingDown
}

// negotiationShutdownGrace is how long a negotiating client may take to
// send its next option once shutdown begins. The server replies to that
// option with NBD_REP_ERR_SHUTDOWN, as the protocol recommends for a server that
// is going away. A client that sends nothing in time is dropped.
const negotiationShutdownGrace = time.Second

// beginShutdown ends negotiation soon: a negotiating client's next
// option gets NBD_REP_ERR_SHUTDOWN, and it is dropped after
// negotiationShutdownGrace at most. A transmitting client keeps being read
// while requests are in flight, and every request read from now on gets an
// ESHUTDOWN reply. Once none is in flight the reader stops and the
// connection closes.
func (c *serverConn) beginShutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.shuttingDown = true
	c.shutdownStarted.Store(true)
	if !c.inTransmission {
		_ = c.conn.SetDeadline(time.Now().Add(negotiationShutdownGrace))
		return
	}
	if c.inFlight.Load() == 0 {
		_ = c.conn.SetReadDeadline(time.Now())
	}
}

// requestDone counts a finished request; the last one to finish during
// shutdown stops the reader.
func (c *serverConn) requestDone() {
	if c.inFlight.Add(-1) == 0 && c.shutdownStarted.Load() {
		c.mu.Lock()
		_ = c.conn.SetReadDeadline(time.Now())
		c.mu.Unlock()
	}
}

// clearReadDeadline lets the reader go on during shutdown. requestDone
// sets the deadline again once no request is in flight.
func (c *serverConn) clearReadDeadline() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn.SetReadDeadline(time.Time{})
}

// unreadBytes returns how many bytes wait in the socket's receive queue
// (SIOCINQ), or 0 when the connection has no socket to ask.
func (c *serverConn) unreadBytes() int {
	sc, ok := c.raw.(syscall.Conn)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) {
		n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	return n
}

// enterTransmission clears the handshake deadline, unless Shutdown has
// already begun and its deadline must stay.
func (c *serverConn) enterTransmission() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inTransmission = true
	if c.shuttingDown {
		return nil
	}
	return c.conn.SetDeadline(time.Time{})
}

// abort closes the connection at once; blocked reads and writes fail.
func (c *serverConn) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		_ = c.conn.Close()
	}
}

func (c *serverConn) close() {
	c.abort()
	_ = c.raw.Close()
}
