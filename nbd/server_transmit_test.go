package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"syscall"
	"testing"
	"time"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// dialExport negotiates the export "" backed by b.
func dialExport(t *testing.T, b export.Backend, structured bool, contexts ...string) *testWire {
	t.Helper()
	cfg := ServerConfig{Exports: []*Export{{Name: "", Backend: b, AllocationDepth: isDepthExtenter(b)}}}
	w, _ := dialWire(t, cfg)
	w.negotiate(structured, contexts...)
	return w
}

func isDepthExtenter(b export.Backend) bool {
	_, ok := b.(export.DepthExtenter)
	return ok
}

func TestCmdWriteReadFlush(t *testing.T) {
	for _, structured := range []bool{false, true} {
		b := newTestBackend(1 << 20)
		w := dialExport(t, b, structured)
		payload := bytes.Repeat([]byte("gonbd"), 1000)

		w.request(proto.CmdWrite, 0, 1, 4096, uint32(len(payload)), payload)
		w.expectErrno(1, 0)
		w.request(proto.CmdFlush, 0, 2, 0, 0, nil)
		w.expectErrno(2, 0)
		syncs, _ := b.counters()
		assert.Equal(t, 1, syncs)

		w.request(proto.CmdRead, 0, 3, 4096, uint32(len(payload)), nil)
		r := w.readTransmissionReply(len(payload))
		require.Equal(t, uint64(3), r.cookie)
		if structured {
			require.Equal(t, proto.ReplyTypeOffsetData, r.chunk.Type)
			assert.Equal(t, proto.ReplyFlagDone, r.chunk.Flags)
			assert.Equal(t, uint64(4096), binary.BigEndian.Uint64(r.data[0:8]))
			assert.Equal(t, payload, r.data[8:])
		} else {
			assert.Equal(t, payload, r.data)
		}

		w.request(proto.CmdDisc, 0, 4, 0, 0, nil)
		w.expectClosed()
	}
}

func TestCmdZeroLength(t *testing.T) {
	w := dialExport(t, newTestBackend(1<<20), true)
	w.request(proto.CmdRead, 0, 1, 0, 0, nil)
	r := w.expectErrno(1, 0)
	assert.Equal(t, proto.ReplyTypeNone, r.chunk.Type)
	w.request(proto.CmdWrite, 0, 2, 0, 0, nil)
	w.expectErrno(2, 0)
}

func TestCmdErrnos(t *testing.T) {
	const size = 1 << 20
	for _, tc := range []struct {
		name       string
		backend    func() export.Backend
		structured bool
		cmd        proto.Command
		flags      proto.CommandFlags
		offset     uint64
		length     uint32
		want       proto.Errno
	}{
		{"ReadPastEnd", full, false, proto.CmdRead, 0, size - 512, 1024, proto.EINVAL},
		{"ReadOffsetPastEnd", full, true, proto.CmdRead, 0, 1 << 62, 1, proto.EINVAL},
		{"ReadTooLarge", full, false, proto.CmdRead, 0, 0, proto.MaxPayloadSize + 1, proto.EINVAL},
		{"ReadTooLargeDF", full, true, proto.CmdRead, proto.CmdFlagDF, 0, proto.MaxPayloadSize + 1, proto.EOVERFLOW},
		{"ReadDFWithoutStructured", full, false, proto.CmdRead, proto.CmdFlagDF, 0, 512, proto.EINVAL},
		{"ReadUnknownFlag", full, false, proto.CmdRead, 1 << 9, 0, 512, proto.EINVAL},
		{"ReadBackendEIO", failing(syscall.EIO), true, proto.CmdRead, 0, 0, 512, proto.EIO},
		{"WritePastEnd", full, false, proto.CmdWrite, 0, size - 4, 8, proto.ENOSPC},
		{"WriteReadOnly", readOnly, false, proto.CmdWrite, 0, 0, 8, proto.EPERM},
		{"WriteBackendENOSPC", failing(syscall.ENOSPC), false, proto.CmdWrite, 0, 0, 8, proto.ENOSPC},
		{"WriteBackendEDQUOT", failing(syscall.EDQUOT), true, proto.CmdWrite, 0, 0, 8, proto.ENOSPC},
		{"WriteBackendEROFS", failing(syscall.EROFS), false, proto.CmdWrite, 0, 0, 8, proto.EPERM},
		{"WriteBackendReadOnly", failing(export.ErrReadOnly), false, proto.CmdWrite, 0, 0, 8, proto.EPERM},
		{"WriteBackendOther", failing(syscall.ENOENT), false, proto.CmdWrite, 0, 0, 8, proto.EIO},
		{"WriteFUAReadOnly", readOnly, false, proto.CmdWrite, proto.CmdFlagFUA, 0, 8, proto.EINVAL},
		{"FlushBackendEIO", failing(syscall.EIO), false, proto.CmdFlush, 0, 0, 0, proto.EIO},
		{"TrimPastEnd", full, false, proto.CmdTrim, 0, size, 1, proto.EINVAL},
		{"TrimUnsupported", plain, false, proto.CmdTrim, 0, 0, 512, proto.EINVAL},
		{"TrimReadOnly", readOnly, false, proto.CmdTrim, 0, 0, 512, proto.EPERM},
		{"ZeroesPastEnd", full, false, proto.CmdWriteZeroes, 0, size, 1, proto.ENOSPC},
		{"ZeroesUnsupported", plain, false, proto.CmdWriteZeroes, 0, 0, 512, proto.EINVAL},
		{"ZeroesReadOnly", readOnly, false, proto.CmdWriteZeroes, 0, 0, 512, proto.EPERM},
		{"ZeroesFastUnsupported", noFastZero, true, proto.CmdWriteZeroes, proto.CmdFlagFastZero, 0, 512, proto.ENOTSUP},
		{"ZeroesFastNotAdvertised", fastZeroOff, false, proto.CmdWriteZeroes, proto.CmdFlagFastZero, 0, 512, proto.EINVAL},
		{"ZeroesDFFlag", full, true, proto.CmdWriteZeroes, proto.CmdFlagDF, 0, 512, proto.EINVAL},
		{"CacheUnsupported", plain, false, proto.CmdCache, 0, 0, 512, proto.EINVAL},
		{"CachePastEnd", full, false, proto.CmdCache, 0, size, 512, proto.EINVAL},
		{"BlockStatusWithoutContext", full, true, proto.CmdBlockStatus, 0, 0, 512, proto.EINVAL},
		{"BlockStatusWithoutStructured", full, false, proto.CmdBlockStatus, 0, 0, 512, proto.EINVAL},
		{"UnknownCommand", full, false, proto.Command(42), 0, 0, 0, proto.EINVAL},
		{"ResizeUnsupported", full, true, proto.CmdResize, 0, 0, 0, proto.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := dialExport(t, tc.backend(), tc.structured)
			var payload []byte
			if tc.cmd == proto.CmdWrite {
				payload = make([]byte, tc.length)
			}
			w.request(tc.cmd, tc.flags, 7, tc.offset, tc.length, payload)
			r := w.expectErrno(7, tc.want)
			if tc.structured {
				assert.Equal(t, proto.ReplyTypeError, r.chunk.Type)
				assert.Equal(t, proto.ReplyFlagDone, r.chunk.Flags)
				msgLen := binary.BigEndian.Uint16(r.data[4:6])
				assert.Equal(t, int(msgLen), len(r.data)-6)
			} else {
				assert.True(t, r.simple)
			}

			// The connection goes on: a flush still succeeds, unless the
			// backend fails everything.
			w.request(proto.CmdFlush, 0, 8, 0, 0, nil)
			r = w.readTransmissionReply(0)
			assert.Equal(t, uint64(8), r.cookie)
		})
	}
}

func full() export.Backend     { return newTestBackend(1 << 20) }
func plain() export.Backend    { return plainBackend{newTestBackend(1 << 20)} }
func readOnly() export.Backend { b := newTestBackend(1 << 20); b.readOnly = true; return b }
func noFastZero() export.Backend {
	b := newTestBackend(1 << 20)
	b.noFastZero = true
	return b
}
func fastZeroOff() export.Backend { b := newTestBackend(1 << 20); b.fastZero = false; return b }
func failing(err error) func() export.Backend {
	return func() export.Backend { b := newTestBackend(1 << 20); b.failWith = err; return b }
}

func TestCmdBadMagicCloses(t *testing.T) {
	w := dialExport(t, newTestBackend(1<<20), false)
	b := requestBytes(proto.CmdRead, 0, 1, 0, 512, nil)
	b[0] ^= 0xff
	w.write(b)
	w.expectClosed()
}

func TestCmdWriteTooLargeCloses(t *testing.T) {
	w := dialExport(t, newTestBackend(1<<20), false)
	w.request(proto.CmdWrite, 0, 1, 0, proto.MaxPayloadSize+1, nil)
	w.expectClosed()
}

func TestCmdWriteFUA(t *testing.T) {
	b := newTestBackend(1 << 20)
	w := dialExport(t, b, false)
	w.request(proto.CmdWrite, proto.CmdFlagFUA, 1, 0, 4, []byte("abcd"))
	w.expectErrno(1, 0)
	_, fua := b.counters()
	assert.Equal(t, 1, fua, "FUAWriter used")

	tb := newTestBackend(1 << 20)
	w = dialExport(t, plainBackend{tb}, false)
	w.request(proto.CmdWrite, proto.CmdFlagFUA, 1, 0, 4, []byte("abcd"))
	w.expectErrno(1, 0)
	syncs, _ := tb.counters()
	assert.Equal(t, 1, syncs, "WriteAt then Sync")
}

func TestCmdWriteZeroesFlags(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags proto.CommandFlags
		want  export.ZeroFlags
	}{
		{"MayTrim", 0, export.ZeroMayTrim},
		{"NoHole", proto.CmdFlagNoHole, 0},
		{"Fast", proto.CmdFlagFastZero, export.ZeroMayTrim | export.ZeroFast},
		{"FastNoHole", proto.CmdFlagFastZero | proto.CmdFlagNoHole, export.ZeroFast},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBackend(1 << 20)
			copy(b.data, "data")
			w := dialExport(t, b, false)
			w.request(proto.CmdWriteZeroes, tc.flags, 1, 0, 8192, nil)
			w.expectErrno(1, 0)
			data, lastZero, _ := b.snapshot()
			assert.Equal(t, tc.want, lastZero)
			assert.Equal(t, make([]byte, 4), data[:4])
		})
	}
}

func TestCmdTrimAndCache(t *testing.T) {
	b := newTestBackend(1 << 20)
	w := dialExport(t, b, false)
	w.request(proto.CmdTrim, proto.CmdFlagFUA, 1, 0, 8192, nil)
	w.expectErrno(1, 0)
	syncs, _ := b.counters()
	assert.Equal(t, 1, syncs, "FUA trim syncs")
	w.request(proto.CmdCache, 0, 2, 0, 8192, nil)
	w.expectErrno(2, 0)
	_, _, cached := b.snapshot()
	assert.Equal(t, int64(8192), cached)
}

// decodeStatusChunk decodes a block status chunk into its context ID and
// (length, flags) pairs.
func decodeStatusChunk(t *testing.T, r testReply) (uint32, [][2]uint32) {
	t.Helper()
	require.Equal(t, proto.ReplyTypeBlockStatus, r.chunk.Type, "chunk %+v data %q", r.chunk, r.data)
	id := binary.BigEndian.Uint32(r.data[0:4])
	var descs [][2]uint32
	for p := r.data[4:]; len(p) >= 8; p = p[8:] {
		descs = append(descs, [2]uint32{binary.BigEndian.Uint32(p[0:4]), binary.BigEndian.Uint32(p[4:8])})
	}
	return id, descs
}

func TestCmdBlockStatus(t *testing.T) {
	hz := proto.StateHole | proto.StateZero
	for _, tc := range []struct {
		name   string
		flags  proto.CommandFlags
		offset uint64
		length uint32
		want   [][2]uint32
	}{
		{"Whole", 0, 0, 1 << 20, [][2]uint32{{8192, 0}, {16384, hz}, {(1 << 20) - 24576, 0}}},
		{"FromHole", 0, 8192, 4096, [][2]uint32{{4096, hz}}},
		{"ReqOne", proto.CmdFlagReqOne, 0, 1 << 20, [][2]uint32{{8192, 0}}},
		{"ReqOneClipped", proto.CmdFlagReqOne, 8192, 100, [][2]uint32{{100, hz}}},
		{"TailClippedToSize", 0, (1 << 20) - 512, 512, [][2]uint32{{512, 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBackend(1 << 20)
			require.NoError(t, b.Zero(8192, 16384, export.ZeroMayTrim))
			w := dialExport(t, b, true, proto.ContextBaseAllocation)
			w.request(proto.CmdBlockStatus, tc.flags, 1, tc.offset, tc.length, nil)
			r := w.readTransmissionReply(0)
			assert.Equal(t, proto.ReplyFlagDone, r.chunk.Flags)
			id, descs := decodeStatusChunk(t, r)
			assert.Equal(t, metaIDBaseAllocation, id)
			assert.Equal(t, tc.want, descs)
		})
	}
}

func TestCmdBlockStatusTwoContexts(t *testing.T) {
	b := newTestBackend(1 << 20)
	require.NoError(t, b.Zero(0, 4096, export.ZeroMayTrim))
	w := dialExport(t, b, true, proto.ContextBaseAllocation, proto.ContextAllocationDepth)
	w.request(proto.CmdBlockStatus, 0, 1, 0, 8192, nil)

	got := map[uint32][][2]uint32{}
	for {
		r := w.readTransmissionReply(0)
		id, descs := decodeStatusChunk(t, r)
		got[id] = descs
		if r.chunk.Flags&proto.ReplyFlagDone != 0 {
			break
		}
	}
	assert.Equal(t, [][2]uint32{{4096, proto.StateHole | proto.StateZero}, {4096, 0}}, got[metaIDBaseAllocation])
	assert.Equal(t, [][2]uint32{{4096, 0}, {4096, 1}}, got[metaIDAllocationDepth])
}

func TestCmdBlockStatusWithoutExtenter(t *testing.T) {
	w := dialExport(t, plainBackend{newTestBackend(1 << 20)}, true, proto.ContextBaseAllocation)
	w.request(proto.CmdBlockStatus, 0, 1, 512, 4096, nil)
	_, descs := decodeStatusChunk(t, w.readTransmissionReply(0))
	assert.Equal(t, [][2]uint32{{4096, 0}}, descs)
}

func TestCmdReadSparse(t *testing.T) {
	b := newTestBackend(1 << 20)
	copy(b.data[:4], "head")
	b.markData(0, 4)
	require.NoError(t, b.Zero(4096, 8192, export.ZeroMayTrim))
	copy(b.data[12288:], "tail")
	w := dialExport(t, b, true)

	w.request(proto.CmdRead, 0, 1, 0, 16384, nil)
	var chunks []testReply
	for {
		r := w.readTransmissionReply(0)
		chunks = append(chunks, r)
		if r.chunk.Flags&proto.ReplyFlagDone != 0 {
			break
		}
	}
	require.Len(t, chunks, 3)
	assert.Equal(t, proto.ReplyTypeOffsetData, chunks[0].chunk.Type)
	assert.Equal(t, "head", string(chunks[0].data[8:12]))
	assert.Equal(t, proto.ReplyTypeOffsetHole, chunks[1].chunk.Type)
	assert.Equal(t, uint64(4096), binary.BigEndian.Uint64(chunks[1].data[0:8]))
	assert.Equal(t, uint32(8192), binary.BigEndian.Uint32(chunks[1].data[8:12]))
	assert.Equal(t, proto.ReplyTypeOffsetData, chunks[2].chunk.Type)
	assert.Equal(t, uint64(12288), binary.BigEndian.Uint64(chunks[2].data[0:8]))
	assert.Equal(t, "tail", string(chunks[2].data[8:12]))

	// With DF the same read is one data chunk.
	w.request(proto.CmdRead, proto.CmdFlagDF, 2, 0, 16384, nil)
	r := w.readTransmissionReply(0)
	assert.Equal(t, proto.ReplyTypeOffsetData, r.chunk.Type)
	assert.Equal(t, proto.ReplyFlagDone, r.chunk.Flags)
	assert.Len(t, r.data, 8+16384)
}

// TestCmdOutOfOrder blocks a read in the backend and checks that the
// replies to later requests arrive first.
func TestCmdOutOfOrder(t *testing.T) {
	b := newTestBackend(1 << 20)
	b.gate = make(chan struct{})
	w := dialExport(t, b, false)

	var batch []byte
	batch = append(batch, requestBytes(proto.CmdRead, 0, 1, 0, 512, nil)...)
	batch = append(batch, requestBytes(proto.CmdWrite, 0, 2, 0, 4, []byte("abcd"))...)
	batch = append(batch, requestBytes(proto.CmdFlush, 0, 3, 0, 0, nil)...)
	w.write(batch)

	seen := map[uint64]bool{}
	for range 2 {
		r := w.readTransmissionReply(0)
		seen[r.cookie] = true
	}
	assert.Equal(t, map[uint64]bool{2: true, 3: true}, seen)

	close(b.gate)
	r := w.readTransmissionReply(512)
	assert.Equal(t, uint64(1), r.cookie)
}

// TestCmdPipelined sends many requests in one write and checks every
// reply arrives once.
func TestCmdPipelined(t *testing.T) {
	b := newTestBackend(1 << 20)
	w := dialExport(t, b, true)
	const n = 500
	var batch []byte
	for i := range uint64(n) {
		data := bytes.Repeat([]byte{byte(i)}, 512)
		batch = append(batch, requestBytes(proto.CmdWrite, 0, 2*i, i*512, 512, data)...)
		batch = append(batch, requestBytes(proto.CmdRead, 0, 2*i+1, i*512, 512, nil)...)
	}
	go w.conn.Write(batch)

	seen := map[uint64]bool{}
	for range 2 * n {
		r := w.readTransmissionReply(0)
		assert.False(t, seen[r.cookie], "cookie %d answered twice", r.cookie)
		seen[r.cookie] = true
		require.Zero(t, r.errno)
	}
	assert.Len(t, seen, 2*n)
	data, _, _ := b.snapshot()
	for i := range n {
		assert.Equal(t, byte(i), data[i*512])
	}
}

// TestCmdDiscWithInFlight checks that NBD_CMD_DISC lets a request in
// flight finish and reply before the connection closes.
func TestCmdDiscWithInFlight(t *testing.T) {
	b := newTestBackend(1 << 20)
	b.gate = make(chan struct{})
	w := dialExport(t, b, false)
	w.write(append(requestBytes(proto.CmdRead, 0, 1, 0, 512, nil), requestBytes(proto.CmdDisc, 0, 2, 0, 0, nil)...))
	close(b.gate)
	r := w.readTransmissionReply(512)
	assert.Equal(t, uint64(1), r.cookie)
	assert.Zero(t, r.errno)
	w.expectClosed()
}

// TestShutdownESHUTDOWN blocks a read in the backend, starts Shutdown,
// and sends another request: it gets an ESHUTDOWN reply, the blocked
// read still completes, and then the connection closes.
func TestShutdownESHUTDOWN(t *testing.T) {
	b := newTestBackend(1 << 20)
	b.gate = make(chan struct{})
	b.entered = make(chan struct{}, 1)
	cfg := ServerConfig{Exports: []*Export{{Name: "", Backend: b}}}
	w, s := dialWire(t, cfg)
	w.negotiate(false)

	w.request(proto.CmdRead, 0, 1, 0, 512, nil)
	<-b.entered
	conn := connsOf(s)[0]
	shutdownDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wireTimeout)
		defer cancel()
		shutdownDone <- s.Shutdown(ctx)
	}()
	waitFor(t, func() bool { return conn.shutdownStarted.Load() })

	w.request(proto.CmdWrite, 0, 2, 0, 4, []byte("late"))
	w.expectErrno(2, proto.ESHUTDOWN)
	close(b.gate)
	r := w.readTransmissionReply(512)
	assert.Equal(t, uint64(1), r.cookie)
	assert.Zero(t, r.errno)
	w.expectClosed()

	require.NoError(t, <-shutdownDone)
	data, _, _ := b.snapshot()
	assert.NotEqual(t, "late", string(data[:4]), "write after shutdown was not applied")
	syncs, _ := b.counters()
	assert.Positive(t, syncs, "Shutdown syncs the backend")
}

func TestShutdownIdleClient(t *testing.T) {
	w, s := dialWire(t, testConfig())
	w.negotiate(false)
	waitFor(t, func() bool { return len(connsOf(s)) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), wireTimeout)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx))
	w.expectClosed()
}

func TestShutdownNegotiatingClient(t *testing.T) {
	w, s := dialWire(t, testConfig())
	w.greetDefault()
	waitFor(t, func() bool { return len(connsOf(s)) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), wireTimeout)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx))
	w.expectClosed()
}

func TestShutdownAnswersOptionWithErrShutdown(t *testing.T) {
	w, s := dialWire(t, testConfig())
	w.greetDefault()
	waitFor(t, func() bool { return len(connsOf(s)) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), wireTimeout)
	defer cancel()
	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- s.Shutdown(ctx) }()
	waitFor(t, func() bool {
		conns := connsOf(s)
		return len(conns) == 1 && conns[0].isShuttingDown()
	})

	w.sendOption(proto.OptList, nil)
	w.expectReply(proto.OptList, proto.RepErrShutdown)
	w.expectClosed()
	require.NoError(t, <-shutdownDone)
}

func connsOf(s *Server) []*serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cs []*serverConn
	for c := range s.conns {
		cs = append(cs, c)
	}
	return cs
}

// waitFor polls cond for up to wireTimeout.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wireTimeout)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "condition not met within %s", wireTimeout)
		time.Sleep(time.Millisecond)
	}
}
