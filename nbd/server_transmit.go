package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
)

// transmission is the transmission phase of one connection. The reader
// serves each request itself and sends its reply; when a request takes it
// longer than slowRequest, another goroutine takes over reading (see
// server_reader.go).
type transmission struct {
	c          *serverConn
	ctx        context.Context
	conn       net.Conn
	export     *Export
	backend    export.Backend
	size       uint64
	flags      proto.TransmissionFlags
	structured bool
	meta       metaSelection

	// Optional backend capabilities, resolved once.
	trimmer   export.Trimmer
	zeroer    export.Zeroer
	cacher    export.Cacher
	extenter  export.Extenter
	depth     export.DepthExtenter
	fuaWriter export.FUAWriter
	// sectioner is set when read data can go from the backend's file to
	// the socket with sendfile: on plain TCP and Unix sockets.
	sectioner export.FileSectioner

	out     *replyWriter
	buffers payloadBuffers

	// Reader state, owned by whichever goroutine holds the reader role.
	br *bufio.Reader
	hb [proto.RequestHeaderSize]byte

	role      atomic.Pointer[readerRole] // the current reader's role
	slowTimer *time.Timer                // hands the role on; see promoteReader
	readDone  chan error                 // the last reader's result
	readers   sync.WaitGroup             // readers started by promoteReader

	writeErrMu sync.Mutex
	writeErr   error
}

func (c *serverConn) newTransmission(ctx context.Context) (*transmission, error) {
	size, err := c.export.Backend.Size()
	if err != nil {
		return nil, fmt.Errorf("size of export %q: %w", c.export.Name, err)
	}
	b := c.export.Backend
	t := &transmission{
		c:          c,
		ctx:        ctx,
		conn:       c.current(),
		export:     c.export,
		backend:    b,
		size:       uint64(size),
		flags:      c.flags,
		structured: c.structured,
		meta:       c.meta,
		readDone:   make(chan error, 1),
	}
	t.out = newReplyWriter(t.conn, c.srv.cfg.WriteTimeout)
	t.buffers.init()
	if t.out.raw != nil {
		t.sectioner, _ = b.(export.FileSectioner)
	}
	t.trimmer, _ = b.(export.Trimmer)
	t.zeroer, _ = b.(export.Zeroer)
	t.cacher, _ = b.(export.Cacher)
	t.extenter, _ = b.(export.Extenter)
	t.depth, _ = b.(export.DepthExtenter)
	t.fuaWriter, _ = b.(export.FUAWriter)
	return t, nil
}

// transmit serves requests until NBD_CMD_DISC, a protocol violation, a
// closed connection or Shutdown. In every case it lets requests already
// read finish and their replies go out before returning.
func (c *serverConn) transmit(ctx context.Context) error {
	t, err := c.newTransmission(ctx)
	if err != nil {
		return err
	}

	readErr := t.readRequests()

	t.readers.Wait()
	t.flushReplies()

	if c.isShuttingDown() {
		if err := t.backend.Sync(); err != nil {
			c.log.Error("sync on shutdown failed", "export", t.export.Name, "error", err)
		}
	}
	if werr := t.writeError(); werr != nil {
		return fmt.Errorf("write replies: %w", werr)
	}
	return readErr
}

// readError turns the error that stopped the reader into transmit's
// result.
func (t *transmission) readError(err error) error {
	switch {
	case t.writeError() != nil:
		return nil // transmit reports the write error
	case isTimeout(err) && t.c.isShuttingDown():
		return errors.New("server shutting down")
	case errors.Is(err, io.EOF):
		return errors.New("client closed the connection without NBD_CMD_DISC")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("client closed the connection inside a request")
	}
	return fmt.Errorf("read request: %w", err)
}

// readWritePayload reads the data of NBD_CMD_WRITE. Data for a request
// that already failed its checks is skipped without a buffer. A length
// past the maximum cannot be skipped safely, so it ends the connection.
// The shutdown read deadline does not stop the reader inside the data,
// which the client is still sending (see keepReading).
func (t *transmission) readWritePayload(br *bufio.Reader, r *serverRequest) error {
	n := int64(r.req.Length)
	if n > proto.MaxPayloadSize {
		t.c.log.Warn("protocol violation, closing", "reason", fmt.Sprintf("write of %d bytes exceeds the maximum payload of %d", n, proto.MaxPayloadSize))
		return errConnDone
	}
	if n == 0 {
		return nil
	}
	if r.errno != 0 {
		for n > 0 {
			m, err := br.Discard(int(n))
			n -= int64(m)
			if err != nil && !t.keepReading(err, true) {
				return t.readError(err)
			}
		}
		return nil
	}
	t.acquirePayload(r, int(n))
	for filled := 0; filled < len(r.payload); {
		m, err := io.ReadFull(br, r.payload[filled:])
		filled += m
		if err != nil && !t.keepReading(err, true) {
			t.releaseBuffers(r)
			return t.readError(err)
		}
	}
	return nil
}

// acquirePayload waits for n bytes of budget and takes a buffer, unless
// r has one.
func (t *transmission) acquirePayload(r *serverRequest, n int) {
	if n == 0 || r.buf != nil {
		return
	}
	r.buf, r.budget = t.buffers.get(n)
	r.payload = r.buf[replyHeadroom:]
}

// release returns r's buffer and budget, and r itself, to their pools.
func (t *transmission) release(r *serverRequest) {
	t.releaseBuffers(r)
	putServerRequest(r)
}

func (t *transmission) releaseBuffers(r *serverRequest) {
	if r.buf != nil || r.budget != 0 {
		t.buffers.put(r.buf, r.budget)
	}
	r.payload, r.buf, r.budget = nil, nil, 0
}

// writeFailed records the first write error and closes the connection,
// which stops the reader.
// flushReplies sends the replies held back in the reply writer.
func (t *transmission) flushReplies() {
	if err := t.out.flush(); err != nil {
		t.writeFailed(err)
	}
}

func (t *transmission) writeFailed(err error) {
	t.writeErrMu.Lock()
	if t.writeErr == nil {
		t.writeErr = err
	}
	t.writeErrMu.Unlock()
	t.c.abort()
}

func (t *transmission) writeError() error {
	t.writeErrMu.Lock()
	defer t.writeErrMu.Unlock()
	return t.writeErr
}
