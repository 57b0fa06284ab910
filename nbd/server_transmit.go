package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
)

// payloadBudgetBytes bounds the payload bytes (write data read, read data
// not yet sent) one connection holds at once, so MaxInFlight large
// requests cannot make the server allocate MaxInFlight times 32 MiB.
const payloadBudgetBytes = 2 * proto.MaxPayloadSize

// transmission is the transmission phase of one connection: the reader
// (the connection's goroutine), a bounded set of workers and one writer.
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

	jobs    chan *serverRequest
	replies chan *serverRequest
	workers sync.WaitGroup
	writer  *replyWriter
	written chan struct{} // closed when the writer has finished
	budget  payloadBudget

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
		jobs:       make(chan *serverRequest),
		replies:    make(chan *serverRequest, c.srv.cfg.MaxInFlight),
		written:    make(chan struct{}),
	}
	t.budget.init(payloadBudgetBytes)
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

	t.writer = newReplyWriter(t, t.conn)
	go func() {
		defer close(t.written)
		t.writer.run(t.replies)
	}()
	for range c.srv.cfg.MaxInFlight {
		t.workers.Add(1)
		go t.work()
	}

	readErr := t.readRequests()

	close(t.jobs)
	t.workers.Wait()
	close(t.replies)
	<-t.written

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

// readRequests is the reader: it decodes requests, reads write payloads,
// checks each request and hands it to a worker. It returns nil after
// NBD_CMD_DISC.
func (t *transmission) readRequests() error {
	br := bufio.NewReaderSize(t.conn, 64<<10)
	var hb [proto.RequestHeaderSize]byte
	for {
		if _, err := io.ReadFull(br, hb[:]); err != nil {
			return t.readError(err)
		}
		r := getServerRequest()
		if err := proto.DecodeRequest(hb[:], &r.req); err != nil {
			putServerRequest(r)
			t.c.log.Warn("protocol violation, closing", "reason", err)
			return errConnDone
		}
		if r.req.Command == proto.CmdDisc {
			putServerRequest(r)
			t.c.log.Debug("client sent NBD_CMD_DISC")
			return nil
		}

		r.errno, r.message = t.check(&r.req)
		if t.c.shutdownStarted.Load() {
			// The protocol recommends ESHUTDOWN for requests received
			// once shutdown has begun.
			r.errno, r.message = proto.ESHUTDOWN, "server is shutting down"
		}
		if r.req.Command == proto.CmdWrite {
			if err := t.readWritePayload(br, r); err != nil {
				putServerRequest(r)
				return err
			}
		}
		if r.errno == 0 && r.req.Command == proto.CmdRead {
			t.acquirePayload(r, int(r.req.Length))
		}
		t.c.inFlight.Add(1)
		t.jobs <- r
	}
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
		if _, err := br.Discard(int(n)); err != nil {
			return t.readError(err)
		}
		return nil
	}
	t.acquirePayload(r, int(n))
	if _, err := io.ReadFull(br, (*r.payload)[:n]); err != nil {
		t.releaseBuffers(r)
		return t.readError(err)
	}
	return nil
}

// acquirePayload waits for n bytes of budget and takes a pooled buffer.
func (t *transmission) acquirePayload(r *serverRequest, n int) {
	if n == 0 {
		return
	}
	r.budget = t.budget.acquire(int64(n))
	r.payload = getPayload(n)
}

// release returns r's buffer and budget, and r itself, to their pools.
func (t *transmission) release(r *serverRequest) {
	t.releaseBuffers(r)
	putServerRequest(r)
}

func (t *transmission) releaseBuffers(r *serverRequest) {
	if r.payload != nil {
		putPayload(r.payload)
		r.payload = nil
	}
	t.budget.release(r.budget)
	r.budget = 0
}

// work runs requests until the reader closes the job channel.
func (t *transmission) work() {
	defer t.workers.Done()
	for r := range t.jobs {
		t.handle(r)
		t.replies <- r
	}
}

// writeFailed records the writer's error and closes the connection, which
// stops the reader.
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

// payloadBudget is a counting semaphore over payload bytes.
type payloadBudget struct {
	mu    sync.Mutex
	cond  sync.Cond
	total int64
	free  int64
}

func (b *payloadBudget) init(total int64) {
	b.cond.L = &b.mu
	b.total, b.free = total, total
}

// acquire waits until n bytes (at most the total) are free, takes them
// and returns how many it took.
func (b *payloadBudget) acquire(n int64) int64 {
	n = min(n, b.total)
	b.mu.Lock()
	for b.free < n {
		b.cond.Wait()
	}
	b.free -= n
	b.mu.Unlock()
	return n
}

func (b *payloadBudget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.free += n
	b.mu.Unlock()
	b.cond.Broadcast()
}
