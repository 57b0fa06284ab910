package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/hashicorp/go-hclog"
)

// Client is a connection in the transmission phase. Its methods are safe
// for concurrent use: requests from many goroutines are pipelined on the
// one connection, and one reader goroutine matches replies to them by
// cookie.
type Client struct {
	conn       net.Conn
	info       ExportInfo
	log        hclog.Logger
	protocol   string
	tls        bool
	structured bool
	// contextIDs maps each negotiated meta context to its server ID.
	contextIDs map[string]uint32

	// slots bounds the requests in flight; the reader frees a slot when
	// it completes a request.
	slots   chan struct{}
	writeMu sync.Mutex

	mu         sync.Mutex
	pending    map[uint64]*clientRequest
	nextCookie uint64
	closing    bool
	err        error // set once the connection is unusable

	readerDone chan struct{}
	closeOnce  sync.Once
}

// clientRequest is one request awaiting its reply.
type clientRequest struct {
	cmd    proto.Command
	offset uint64
	length uint32
	// buf receives the data of a read.
	buf []byte
	// covered counts the bytes of buf that reply chunks filled.
	covered uint64
	// context is the meta context ID whose extents a block status
	// request collects into extents.
	context     uint32
	extents     []BlockExtent
	haveExtents bool

	err  error
	done chan struct{}
}

// Dial connects to the export an NBD URI names and enters transmission.
func Dial(ctx context.Context, uri string, opts ...DialOption) (*Client, error) {
	n, err := Negotiate(ctx, uri, opts...)
	if err != nil {
		return nil, err
	}
	return n.Go(ctx, "")
}

// DialAddr is Dial for a network ("tcp" or "unix") and address; the export
// name comes from WithExportName (default "").
func DialAddr(ctx context.Context, network, address string, opts ...DialOption) (*Client, error) {
	n, err := NegotiateAddr(ctx, network, address, opts...)
	if err != nil {
		return nil, err
	}
	return n.Go(ctx, "")
}

func newClient(n *Negotiation, info *ExportInfo, contexts []metaContext) *Client {
	c := &Client{
		conn:       n.conn,
		info:       *info,
		log:        n.log.With("export", info.Name),
		protocol:   n.protocol,
		tls:        n.tls,
		structured: n.structured,
		contextIDs: make(map[string]uint32, len(contexts)),
		slots:      make(chan struct{}, n.cfg.maxInFlight),
		pending:    make(map[uint64]*clientRequest),
		nextCookie: 1,
		readerDone: make(chan struct{}),
	}
	for _, mc := range contexts {
		c.contextIDs[mc.name] = mc.id
	}
	go c.readLoop()
	c.log.Debug("transmission started", "size", info.Size, "flags", info.Flags.Names(), "structured", c.structured)
	return c
}

// Info returns the export details the server sent.
func (c *Client) Info() ExportInfo { return c.info }

// Size returns the export size in bytes.
func (c *Client) Size() int64 { return c.info.Size }

// Protocol returns the handshake style: "newstyle-fixed", "newstyle" or
// "oldstyle".
func (c *Client) Protocol() string { return c.protocol }

// TLS reports whether the connection is TLS-protected.
func (c *Client) TLS() bool { return c.tls }

// StructuredReplies reports whether structured replies are in use.
func (c *Client) StructuredReplies() bool { return c.structured }

// MetaContexts returns the meta contexts the server agreed to.
func (c *Client) MetaContexts() []string {
	out := make([]string, 0, len(c.contextIDs))
	for name := range c.contextIDs {
		out = append(out, name)
	}
	return out
}

// CanMetaContext reports whether the server agreed to the meta context.
func (c *Client) CanMetaContext(name string) bool {
	_, ok := c.contextIDs[name]
	return ok
}

// start registers req under a fresh cookie and sends it with payload. It
// waits for a free in-flight slot first.
func (c *Client) start(req *clientRequest, flags proto.CommandFlags, payload []byte) error {
	req.done = make(chan struct{})
	select {
	case c.slots <- struct{}{}:
	case <-c.readerDone:
		return c.connErr()
	}

	c.mu.Lock()
	if err := c.errLocked(); err != nil {
		c.mu.Unlock()
		<-c.slots
		return err
	}
	cookie := c.nextCookie
	c.nextCookie++
	c.pending[cookie] = req
	c.mu.Unlock()

	hdr := proto.Request{Flags: flags, Command: req.cmd, Cookie: cookie, Offset: req.offset, Length: req.length}
	var b [proto.RequestHeaderSize]byte
	bufs := net.Buffers{hdr.Encode(b[:])}
	if len(payload) > 0 {
		bufs = append(bufs, payload)
	}
	c.writeMu.Lock()
	_, err := bufs.WriteTo(c.conn)
	c.writeMu.Unlock()
	if err != nil {
		err = fmt.Errorf("send %s: %w", req.cmd, err)
		c.fail(err)
		return err
	}
	return nil
}

// wait waits for req's reply.
func (c *Client) wait(req *clientRequest) error {
	<-req.done
	return req.err
}

// errLocked returns the error new requests get, or nil. c.mu is held.
func (c *Client) errLocked() error {
	if c.err != nil {
		return c.err
	}
	if c.closing {
		return ErrClientClosed
	}
	return nil
}

func (c *Client) connErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.errLocked(); err != nil {
		return err
	}
	return ErrClientClosed
}

// fail marks the connection unusable, completes every pending request with
// err and closes the socket.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	err = c.err
	pending := c.pending
	c.pending = map[uint64]*clientRequest{}
	c.mu.Unlock()

	for _, req := range pending {
		if req.err == nil {
			req.err = err
		}
		c.complete(req)
	}
	_ = c.conn.Close()
}

// complete finishes a request that is no longer in c.pending.
func (c *Client) complete(req *clientRequest) {
	close(req.done)
	<-c.slots
}

// take removes and returns the request with cookie, or nil.
func (c *Client) take(cookie uint64) *clientRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	req := c.pending[cookie]
	delete(c.pending, cookie)
	return req
}

// lookup returns the request with cookie, or nil, leaving it pending.
func (c *Client) lookup(cookie uint64) *clientRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[cookie]
}

// Close sends NBD_CMD_DISC, lets the server finish the requests in flight
// and closes the connection. Requests still pending after closeTimeout get
// ErrClientClosed.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		broken := c.err != nil
		c.mu.Unlock()

		if !broken {
			hdr := proto.Request{Command: proto.CmdDisc}
			var b [proto.RequestHeaderSize]byte
			c.writeMu.Lock()
			_ = c.conn.SetWriteDeadline(time.Now().Add(closeTimeout))
			_, _ = c.conn.Write(hdr.Encode(b[:]))
			c.writeMu.Unlock()
			if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
		}

		select {
		case <-c.readerDone:
		case <-time.After(closeTimeout):
			c.log.Warn("server did not close the connection after NBD_CMD_DISC; closing it")
		}
		c.fail(ErrClientClosed)
		<-c.readerDone
	})
	return nil
}

// closeTimeout bounds how long Close waits for the server to finish.
const closeTimeout = 5 * time.Second

// readLoop runs the reply reader until the connection ends.
func (c *Client) readLoop() {
	defer close(c.readerDone)
	d := newReplyDecoder(c)
	for {
		if err := d.readReply(); err != nil {
			c.mu.Lock()
			closing := c.closing
			c.mu.Unlock()
			switch {
			case closing && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)):
				err = ErrClientClosed
			case errors.Is(err, io.EOF):
				err = fmt.Errorf("nbd: server closed the connection: %w", io.ErrUnexpectedEOF)
			}
			var pe *ProtocolError
			if errors.As(err, &pe) {
				c.log.Error("dropping connection", "error", err)
			}
			c.fail(err)
			return
		}
	}
}
