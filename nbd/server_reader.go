package nbd

import (
	"bufio"
	"io"
	"sync/atomic"
	"time"

	"github.com/gonbd/gonbd/nbd/proto"
)

// The reader decodes a request, serves it on its own goroutine and sends
// the reply under the reply writer's lock, so a request takes no hand-off
// between goroutines. In make bench, handing every request from a reader
// to a worker and from the worker to a writer goroutine held gonbd to
// about half of nbdkit's read throughput on a Unix socket.
//
// A request the backend is slow to serve (a disk read, an fdatasync, a
// blocked backend) must not keep the connection from reading. So when the
// reader has spent slowRequest on one request, a timer hands the reader
// role to a new goroutine. The old one exits after sending its reply.
// Requests then run in parallel as the backend needs, up to MaxInFlight.

// slowRequest is how long the reader serves one request before another
// goroutine takes over reading. Copying 32 MiB, the largest request,
// from the page cache takes a few milliseconds.
const slowRequest = 2 * time.Millisecond

// readerRole is the state of one goroutine's turn as the reader.
type readerRole struct {
	state atomic.Int32
}

// Reader role states.
const (
	roleReading    int32 = iota // reading or between requests
	roleServing                 // serving a request
	roleHandedOver              // promoteReader gave the role to another goroutine
)

// readRequests runs the reader until NBD_CMD_DISC (nil), a protocol
// violation or a read error, and returns the result of the goroutine
// that read last.
func (t *transmission) readRequests() error {
	t.br = bufio.NewReaderSize(t.conn, 64<<10)
	t.slowTimer = time.AfterFunc(time.Hour, t.promoteReader)
	t.slowTimer.Stop()
	defer t.slowTimer.Stop()

	role := new(readerRole)
	t.role.Store(role)
	t.readLoop(role)
	return <-t.readDone
}

// readLoop reads and serves requests until the reader stops, when it
// sends the result to t.readDone, or until the role is handed over.
func (t *transmission) readLoop(role *readerRole) {
	for {
		r, err := t.readRequest()
		if r == nil {
			role.state.Store(roleHandedOver) // a late timer finds nothing to hand over
			t.readDone <- err
			return
		}
		if !t.serve(role, r) {
			return
		}
	}
}

// serve runs r on the reader's goroutine and reports whether this
// goroutine is still the reader. The slow timer runs while the reply is
// sent too, so a reader blocked on a full socket also hands on the role.
// The connection then goes on reading, and requests that arrive during
// shutdown get their ESHUTDOWN replies.
func (t *transmission) serve(role *readerRole, r *serverRequest) bool {
	// While the next request is already buffered, a small reply waits to
	// share a system call with the next one.
	moreBuffered := t.br.Buffered() >= proto.RequestHeaderSize

	role.state.Store(roleServing)
	t.slowTimer.Reset(slowRequest)
	t.handle(r)
	t.finish(r, moreBuffered)
	if role.state.CompareAndSwap(roleServing, roleReading) {
		t.slowTimer.Stop()
		return true
	}
	// The timer now belongs to the new reader, so it keeps running. That
	// reader may already be blocked in a read while the client waits for
	// this held reply.
	t.flushReplies()
	return false
}

// promoteReader runs when the reader has served one request for
// slowRequest. Unless MaxInFlight requests are in flight, it starts a new
// goroutine as the reader.
func (t *transmission) promoteReader() {
	if t.c.inFlight.Load() >= int64(t.c.srv.cfg.MaxInFlight) {
		// No new reader will send the replies held back for earlier
		// requests, so send them now.
		t.flushReplies()
		return
	}
	role := t.role.Load()
	if !role.state.CompareAndSwap(roleServing, roleHandedOver) {
		return // the request finished first
	}
	next := new(readerRole)
	t.role.Store(next)
	t.readers.Add(1)
	go func() {
		defer t.readers.Done()
		t.readLoop(next)
	}()
}

// readRequest reads and checks the next request, and the data of a
// write. A read takes its buffer when served, unless it needs none. It returns nil at the end: with a nil error after NBD_CMD_DISC.
func (t *transmission) readRequest() (*serverRequest, error) {
	if t.br.Buffered() < proto.RequestHeaderSize {
		// The next read may block, so send the replies held back.
		t.flushReplies()
	}
	if err := t.readHeader(); err != nil {
		return nil, t.readError(err)
	}
	r := getServerRequest()
	if err := proto.DecodeRequest(t.hb[:], &r.req); err != nil {
		putServerRequest(r)
		t.c.log.Warn("protocol violation, closing", "reason", err)
		return nil, errConnDone
	}
	if r.req.Command == proto.CmdDisc {
		putServerRequest(r)
		t.c.log.Debug("client sent NBD_CMD_DISC")
		return nil, nil
	}

	r.errno, r.message = t.check(&r.req)
	if t.c.shutdownStarted.Load() {
		// The protocol recommends ESHUTDOWN for requests received
		// once shutdown has begun.
		r.errno, r.message = proto.ESHUTDOWN, "server is shutting down"
	}
	if r.req.Command == proto.CmdWrite {
		if err := t.readWritePayload(t.br, r); err != nil {
			putServerRequest(r)
			return nil, err
		}
	}
	t.c.inFlight.Add(1)
	return r, nil
}

// readHeader reads the next request header into t.hb. During shutdown
// the read deadline stops the reader once no request is in flight, but
// requests may already wait in the socket: closing it then would reset
// the connection and lose replies the client has not read yet. So the
// reader goes on while the socket has unread bytes or once it has read
// part of a header.
func (t *transmission) readHeader() error {
	n := 0
	for {
		m, err := io.ReadFull(t.br, t.hb[n:])
		n += m
		if err == nil || !t.keepReading(err, n > 0) {
			if n > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
}

// keepReading reports whether the reader goes on after err. It does after
// a timeout from the shutdown read deadline while the socket has unread
// bytes, or inside a request whose rest the client is still sending, and
// then clears the deadline. requestDone sets it again.
// NOTE: a client that stops sending inside a request keeps its connection
// open until the context given to Shutdown ends.
func (t *transmission) keepReading(err error, inRequest bool) bool {
	if !isTimeout(err) || !t.c.isShuttingDown() {
		return false
	}
	if !inRequest && t.c.unreadBytes() == 0 {
		return false
	}
	return t.c.clearReadDeadline() == nil
}

// finish sends r's reply and releases r.
func (t *transmission) finish(r *serverRequest, deferFlush bool) {
	if err := t.out.send(r, deferFlush); err != nil {
		t.writeFailed(err)
	}
	t.release(r)
	t.c.requestDone()
}
