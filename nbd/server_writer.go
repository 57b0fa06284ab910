package nbd

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// replyWriter writes replies to one connection. The goroutine that served
// a request sends its reply under the writer's mutex, so a reply takes no hand-off
// to another goroutine. Headers and other small pieces gather in a
// buffer. A reply with data goes out with one writev of the buffer and
// the data on TCP and Unix sockets. On other connections, such as TLS
// sessions, the header goes into the headroom before the data (see
// replyHeadroom) and both go out with one Write, so records are full.
type replyWriter struct {
	mu      sync.Mutex
	conn    net.Conn
	timeout time.Duration
	vectors bool // conn writes net.Buffers with writev
	// raw is the socket of a TCP or Unix connection, for sendfile.
	raw   syscall.RawConn
	small []byte    // pending small pieces
	vec   [2][]byte // writev scratch
	err   error     // first write error; later sends fail with it
}

// smallBufferSize is the pending small-piece buffer: 4096 simple replies.
const smallBufferSize = 64 << 10

func newReplyWriter(conn net.Conn, timeout time.Duration) *replyWriter {
	w := &replyWriter{conn: conn, timeout: timeout, small: make([]byte, 0, smallBufferSize)}
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		w.vectors = true
		if sc, ok := conn.(syscall.Conn); ok {
			w.raw, _ = sc.SyscallConn()
		}
	}
	return w
}

// send writes r's reply. With deferFlush the bytes may stay in the
// buffer; the caller then promises a later send without it or a flush.
// The reader defers while it has more requests buffered, so a run of
// small replies (such as write acknowledgements) shares one system call.
func (w *replyWriter) send(r *serverRequest, deferFlush bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if err := w.conn.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
		return w.fail(err)
	}

	for _, s := range r.segments {
		var err error
		switch {
		case s.file != nil:
			err = w.sendFile(s.file, s.filePos, s.fileLen)
		case s.data == nil:
			err = w.writeSmall(r.scratch[s.start:s.end])
		default:
			err = w.writeData(r, s.data)
		}
		if err != nil {
			return w.fail(err)
		}
	}
	if deferFlush {
		return nil
	}
	if err := w.flushLocked(); err != nil {
		return w.fail(err)
	}
	return nil
}

// writeSmall buffers b, writing the buffer out first when b does not fit.
func (w *replyWriter) writeSmall(b []byte) error {
	if len(w.small)+len(b) > cap(w.small) {
		if err := w.flushLocked(); err != nil {
			return err
		}
	}
	if len(b) > cap(w.small) {
		_, err := w.conn.Write(b)
		return err
	}
	w.small = append(w.small, b...)
	return nil
}

// writeData writes the pending small pieces and data, which is part of
// r's payload.
func (w *replyWriter) writeData(r *serverRequest, data []byte) error {
	if w.vectors {
		w.vec[0], w.vec[1] = w.small, data
		bufs := net.Buffers(w.vec[:])
		_, err := bufs.WriteTo(w.conn)
		w.vec[0], w.vec[1] = nil, nil
		w.small = w.small[:0]
		return err
	}

	if len(w.small) <= replyHeadroom && len(r.payload) > 0 && &data[0] == &r.payload[0] {
		start := replyHeadroom - len(w.small)
		copy(r.buf[start:], w.small)
		w.small = w.small[:0]
		_, err := w.conn.Write(r.buf[start : replyHeadroom+len(data)])
		return err
	}
	if err := w.flushLocked(); err != nil {
		return err
	}
	_, err := w.conn.Write(data)
	return err
}

// sendFile writes the pending small pieces, with MSG_MORE so that TCP
// sends them in one segment with the data, and then n bytes of f at pos
// with sendfile. On TCP and, since Linux 6.5, on Unix sockets sendfile
// hands page cache pages to the socket without copying them. A file that
// ends early leaves the reply short, so that is an error that ends the
// connection.
func (w *replyWriter) sendFile(f *os.File, pos int64, n int) error {
	src := int(f.Fd())
	small := w.small
	var opErr error
	err := w.raw.Write(func(fd uintptr) bool {
		for len(small) > 0 {
			m, e := unix.SendmsgN(int(fd), small, nil, nil, unix.MSG_MORE)
			switch {
			case e == unix.EAGAIN:
				return false
			case e == unix.EINTR:
				continue
			case e != nil:
				opErr = fmt.Errorf("sendmsg: %w", e)
				return true
			}
			small = small[m:]
		}
		for n > 0 {
			m, e := unix.Sendfile(int(fd), src, &pos, n)
			n -= max(m, 0)
			switch {
			case e == unix.EAGAIN:
				return false
			case e == unix.EINTR:
				continue
			case e != nil:
				opErr = fmt.Errorf("sendfile from %s: %w", f.Name(), e)
				return true
			case m == 0:
				opErr = fmt.Errorf("sendfile from %s at %d: %w", f.Name(), pos, io.ErrUnexpectedEOF)
				return true
			}
		}
		return true
	})
	w.small = w.small[:0]
	if err != nil {
		return err
	}
	return opErr
}

// flush writes out anything buffered.
func (w *replyWriter) flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil || len(w.small) == 0 {
		return w.err
	}
	if err := w.conn.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
		return w.fail(err)
	}
	if err := w.flushLocked(); err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *replyWriter) flushLocked() error {
	if len(w.small) == 0 {
		return nil
	}
	_, err := w.conn.Write(w.small)
	w.small = w.small[:0]
	return err
}

func (w *replyWriter) fail(err error) error {
	w.err = err
	return err
}
