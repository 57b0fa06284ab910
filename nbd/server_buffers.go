package nbd

import (
	"sync"
)

// payloadBuffers hands out one connection's payload buffers. A byte
// budget bounds the payload bytes in use at once, so MaxInFlight large
// requests cannot make the server allocate MaxInFlight times 32 MiB, and
// returned buffers are kept for reuse up to retainBytes. The buffers are
// not in a sync.Pool, because the garbage collector empties those and
// the refills showed up as heap growth and peak RSS in make bench.
type payloadBuffers struct {
	mu    sync.Mutex
	cond  sync.Cond
	total int64 // budget
	used  int64 // budget taken by buffers in use

	free     [][]byte // returned buffers, for reuse
	retained int64    // capacity of free, in bytes
}

const (
	// payloadBudgetBytes bounds the payload bytes (write data read, read
	// data not yet sent) one connection holds at once: eight of nbdcopy's
	// 256 KiB requests. A single request may take the whole budget, so
	// any request up to the protocol's maximum payload can proceed. With
	// 16 MiB, four connections writing one file (whose inode lock makes
	// pwrite slow enough to hand the reader role on) reached qemu-nbd's
	// peak RSS in make bench.
	payloadBudgetBytes = 2 << 20
	// retainBytes bounds the returned buffers a connection keeps: the
	// reader's buffer and a few for goroutines it handed the role to.
	retainBytes = 1 << 20
	// bufferRound rounds allocations up, so that requests of slightly
	// different lengths can share buffers.
	bufferRound = 64 << 10
	// replyHeadroom is free space before each payload, so that a reply
	// header can be put right before the data and both written with one
	// Write. TLS sessions, which cannot write two slices at once, then
	// send full records and need no copy into a write buffer.
	replyHeadroom = 32
)

func (b *payloadBuffers) init() {
	b.cond.L = &b.mu
	b.total = payloadBudgetBytes
}

// get waits for n bytes of budget and returns a buffer of
// replyHeadroom+n bytes and the budget it took, which put gives back.
func (b *payloadBuffers) get(n int) ([]byte, int64) {
	n += replyHeadroom
	need := min(int64(n), b.total)
	b.mu.Lock()
	for b.total-b.used < need {
		b.cond.Wait()
	}
	b.used += need
	buf := b.takeFree(n)
	b.mu.Unlock()

	if buf == nil {
		size := (n + bufferRound - 1) &^ (bufferRound - 1)
		buf = make([]byte, size)
	}
	return buf[:n], need
}

// takeFree removes and returns the smallest free buffer of at least n
// bytes, or nil.
func (b *payloadBuffers) takeFree(n int) []byte {
	best := -1
	for i, f := range b.free {
		if cap(f) >= n && (best < 0 || cap(f) < cap(b.free[best])) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	buf := b.free[best]
	last := len(b.free) - 1
	b.free[best] = b.free[last]
	b.free[last] = nil
	b.free = b.free[:last]
	b.retained -= int64(cap(buf))
	return buf
}

// put returns a buffer and its budget. A buffer that does not fit under
// retainBytes is left to the garbage collector.
func (b *payloadBuffers) put(buf []byte, budget int64) {
	b.mu.Lock()
	b.used -= budget
	if buf != nil && b.retained+int64(cap(buf)) <= retainBytes {
		b.free = append(b.free, buf[:0])
		b.retained += int64(cap(buf))
	}
	b.mu.Unlock()
	if budget != 0 {
		b.cond.Broadcast()
	}
}
