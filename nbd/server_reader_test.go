package nbd

import (
	"sync"
	"testing"

	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gatedBackend blocks every read until gate is closed, sends on entered
// as each read starts and records the most reads in the backend at once.
type gatedBackend struct {
	*testBackend
	gate    chan struct{}
	entered chan struct{}

	mu        sync.Mutex
	active    int
	maxActive int
}

func newGatedBackend(reads int) *gatedBackend {
	return &gatedBackend{
		testBackend: newTestBackend(1 << 20),
		gate:        make(chan struct{}),
		entered:     make(chan struct{}, reads),
	}
}

func (b *gatedBackend) ReadAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	b.active++
	b.maxActive = max(b.maxActive, b.active)
	b.mu.Unlock()
	b.entered <- struct{}{}
	<-b.gate

	b.mu.Lock()
	b.active--
	b.mu.Unlock()
	return b.testBackend.ReadAt(p, off)
}

func (b *gatedBackend) mostActive() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.maxActive
}

// readCookies reads n simple read replies of dataLen bytes and returns
// their cookies, which may come in any order.
func readCookies(w *testWire, n, dataLen int) []uint64 {
	var cookies []uint64
	for range n {
		r := w.readTransmissionReply(dataLen)
		cookies = append(cookies, r.cookie)
	}
	return cookies
}

// TestBlockedReadsRunInParallel checks that reads blocked in the backend
// do not stop the connection from reading: each one hands the reader
// role on, so all of them reach the backend before any finishes.
func TestBlockedReadsRunInParallel(t *testing.T) {
	const reads = 4
	b := newGatedBackend(reads)
	w, _ := dialWire(t, ServerConfig{Exports: []*Export{{Name: "", Backend: b}}})
	w.negotiate(false)

	for i := range uint64(reads) {
		w.request(proto.CmdRead, 0, i+1, i*512, 512, nil)
	}
	for range reads {
		<-b.entered
	}
	close(b.gate)

	assert.ElementsMatch(t, []uint64{1, 2, 3, 4}, readCookies(w, reads, 512))
	assert.Equal(t, reads, b.mostActive())
}

// TestBlockedReadsCappedByMaxInFlight checks that no more than
// MaxInFlight requests run at once when the backend blocks, and that the
// rest are served once it unblocks.
func TestBlockedReadsCappedByMaxInFlight(t *testing.T) {
	const reads, maxInFlight = 4, 2
	b := newGatedBackend(reads)
	cfg := ServerConfig{Exports: []*Export{{Name: "", Backend: b}}, MaxInFlight: maxInFlight}
	w, _ := dialWire(t, cfg)
	w.negotiate(false)

	for i := range uint64(reads) {
		w.request(proto.CmdRead, 0, i+1, i*512, 512, nil)
	}
	for range maxInFlight {
		<-b.entered
	}
	close(b.gate)

	assert.ElementsMatch(t, []uint64{1, 2, 3, 4}, readCookies(w, reads, 512))
	assert.Equal(t, maxInFlight, b.mostActive())
}

// TestWriteRepliesAfterBatch sends a batch of writes in one segment, so
// the reader holds small replies back while more requests are buffered,
// and checks that every reply still arrives.
func TestWriteRepliesAfterBatch(t *testing.T) {
	b := newTestBackend(1 << 20)
	w := dialExport(t, b, false)
	const writes = 100
	var batch []byte
	for i := range uint64(writes) {
		batch = append(batch, requestBytes(proto.CmdWrite, 0, i+1, i*512, 512, make([]byte, 512))...)
	}
	w.write(batch)

	want := make([]uint64, writes)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	assert.Equal(t, want, readCookies(w, writes, 0))
}

func TestPayloadBuffersReuse(t *testing.T) {
	var p payloadBuffers
	p.init()

	buf, budget := p.get(1000)
	require.Len(t, buf, replyHeadroom+1000)
	assert.Equal(t, int64(replyHeadroom+1000), budget)
	first := &buf[:1][0]
	p.put(buf, budget)

	again, budget := p.get(2000)
	assert.Len(t, again, replyHeadroom+2000)
	assert.Same(t, first, &again[:1][0], "a returned buffer that fits is reused")
	p.put(again, budget)
	assert.Zero(t, p.used)
}

func TestPayloadBuffersRetainBound(t *testing.T) {
	var p payloadBuffers
	p.init()

	var bufs [][]byte
	var budgets []int64
	require.Greater(t, payloadBudgetBytes, retainBytes, "the test returns more than is retained")
	for range payloadBudgetBytes / bufferRound {
		b, n := p.get(bufferRound - replyHeadroom)
		bufs, budgets = append(bufs, b), append(budgets, n)
	}
	for i := range bufs {
		p.put(bufs[i], budgets[i])
	}
	assert.LessOrEqual(t, p.retained, int64(retainBytes))
	assert.Zero(t, p.used)
}

// TestPayloadBuffersBudgetWaits takes the whole budget and checks that
// the next get completes once the budget is returned.
func TestPayloadBuffersBudgetWaits(t *testing.T) {
	var p payloadBuffers
	p.init()

	big, budget := p.get(proto.MaxPayloadSize)
	assert.Equal(t, int64(payloadBudgetBytes), budget, "a request larger than the budget takes all of it")

	done := make(chan struct{})
	go func() {
		b, n := p.get(512)
		p.put(b, n)
		close(done)
	}()
	p.put(big, budget)
	<-done
	assert.Zero(t, p.used)
}

// firstWriteBlocks blocks the write at offset 0 until release is closed
// and closes started when that write begins.
type firstWriteBlocks struct {
	*testBackend
	started chan struct{}
	release chan struct{}
}

func (b *firstWriteBlocks) WriteAt(p []byte, off int64) (int, error) {
	if off == 0 {
		close(b.started)
		<-b.release
	}
	return b.testBackend.WriteAt(p, off)
}

// TestHeldReplySentAfterHandOver sends two writes in one segment. The
// first blocks past slowRequest, so a new goroutine takes over reading,
// replies to the second and waits for more requests. The first reply,
// held back because the second request was already buffered, must still
// go out although the client sends nothing more.
func TestHeldReplySentAfterHandOver(t *testing.T) {
	b := &firstWriteBlocks{testBackend: newTestBackend(1 << 20), started: make(chan struct{}), release: make(chan struct{})}
	w := dialExport(t, b, false)
	batch := requestBytes(proto.CmdWrite, 0, 1, 0, 512, make([]byte, 512))
	batch = append(batch, requestBytes(proto.CmdWrite, 0, 2, 4096, 512, make([]byte, 512))...)
	w.write(batch)
	<-b.started

	assert.Equal(t, uint64(2), w.readTransmissionReply(0).cookie, "reply from the new reader")
	close(b.release)
	assert.Equal(t, uint64(1), w.readTransmissionReply(0).cookie, "held reply")
}

// TestHeldReplySentAtMaxInFlight sends two writes in one segment to a
// connection that serves one request at a time. The second blocks, and
// no goroutine takes over reading, but the first reply, held back
// because the second request was already buffered, must still go out.
func TestHeldReplySentAtMaxInFlight(t *testing.T) {
	b := &firstWriteBlocks{testBackend: newTestBackend(1 << 20), started: make(chan struct{}), release: make(chan struct{})}
	cfg := ServerConfig{Exports: []*Export{{Name: "", Backend: b}}, MaxInFlight: 1}
	w, _ := dialWire(t, cfg)
	w.negotiate(false)
	batch := requestBytes(proto.CmdWrite, 0, 1, 4096, 512, make([]byte, 512))
	batch = append(batch, requestBytes(proto.CmdWrite, 0, 2, 0, 512, make([]byte, 512))...)
	released := false
	t.Cleanup(func() {
		if !released {
			close(b.release)
		}
	})
	w.write(batch)
	<-b.started

	assert.Equal(t, uint64(1), w.readTransmissionReply(0).cookie, "held reply")
	close(b.release)
	released = true
	assert.Equal(t, uint64(2), w.readTransmissionReply(0).cookie, "reply to the blocked write")
}
