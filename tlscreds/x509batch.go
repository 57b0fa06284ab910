package tlscreds

import (
	"net"
	"sync"
)

// crypto/tls writes every record of a Write with its own write call, so a
// 256 KiB NBD read reply costs 16 system calls, and on loopback TCP each
// one runs the receiver's network stack as well. batchConn sits between
// crypto/tls and the socket and, while an x509Conn.Write runs, gathers
// those records and sends them in batches of up to batchBytes. In
// make bench (2 vCPUs, loopback TCP) the write system calls took about a
// quarter of gonbd's CPU time when every record went out alone.

// batchBytes holds eight full TLS records of 16 KiB plus overhead.
const batchBytes = 8 * (16<<10 + 256)

// batchConn is the socket under a crypto/tls session. mu orders batched
// and direct writes: a write outside a batch (a handshake message, an
// alert, a KeyUpdate sent by the reading side) first sends what the batch
// holds.
type batchConn struct {
	net.Conn

	mu       sync.Mutex
	batching bool
	buf      []byte
	err      error // a failed batch leaves the record stream broken
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if !b.batching || len(p) > batchBytes {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		return b.Conn.Write(p)
	}
	if len(b.buf)+len(p) > batchBytes {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	if b.buf == nil {
		b.buf = make([]byte, 0, batchBytes)
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// startBatch makes writes gather until endBatch.
func (b *batchConn) startBatch() {
	b.mu.Lock()
	b.batching = true
	b.mu.Unlock()
}

// endBatch sends what the batch holds and makes writes direct again.
func (b *batchConn) endBatch() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batching = false
	return b.flushLocked()
}

func (b *batchConn) flushLocked() error {
	if b.err != nil {
		return b.err
	}
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	b.buf = b.buf[:0]
	if err != nil {
		b.err = err
	}
	return err
}
