package integration

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gonbd/gonbd/export/memory"
	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// faultBlock is the unit the fault tests write: one pattern per block.
const faultBlock = 64 << 10

// blockPattern returns the data a client writes to block n: seeded
// random bytes, different for every block.
func blockPattern(n int64) []byte {
	p := make([]byte, faultBlock)
	_, _ = rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16), 0x5a}).Read(p)
	return p
}

// blockLog records, per block, whether a write was acknowledged or is
// still unknown (sent but never acknowledged).
type blockLog struct {
	mu      sync.Mutex
	acked   map[int64]bool
	unknown map[int64]bool
}

func newBlockLog() *blockLog {
	return &blockLog{acked: map[int64]bool{}, unknown: map[int64]bool{}}
}

func (l *blockLog) record(n int64, acked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if acked {
		l.acked[n] = true
	} else {
		l.unknown[n] = true
	}
}

// check compares the image at path with the log: an acknowledged block
// holds its pattern, an unacknowledged one its pattern or zeroes, and every
// other block zeroes.
func (l *blockLog) check(t *testing.T, image []byte) {
	t.Helper()
	zero := make([]byte, faultBlock)
	for n := int64(0); n < int64(len(image))/faultBlock; n++ {
		got := image[n*faultBlock : (n+1)*faultBlock]
		want := blockPattern(n)
		switch {
		case l.acked[n]:
			require.True(t, bytes.Equal(want, got), "acknowledged block %d is not on disk", n)
		case l.unknown[n]:
			require.True(t, bytes.Equal(want, got) || bytes.Equal(zero, got), "unacknowledged block %d holds other data", n)
		default:
			require.True(t, bytes.Equal(zero, got), "block %d was never written but is not zero", n)
		}
	}
}

// writeBlocks has one client write blocks first, first+step, ... below
// limit until stop is closed or a write fails, and records each.
func writeBlocks(c *nbd.Client, log *blockLog, first, step, limit int64, stop <-chan struct{}, opts ...nbd.WriteOption) error {
	for n := first; n < limit; n += step {
		select {
		case <-stop:
			return nil
		default:
		}
		if _, err := c.WriteAtWith(blockPattern(n), n*faultBlock, opts...); err != nil {
			log.record(n, false)
			return err
		}
		log.record(n, true)
	}
	return nil
}

// TestRobustSignalMidLoad sends SIGTERM or SIGINT while 16 clients
// write. gonbd stops accepting, finishes the requests in flight,
// replies to later requests with ESHUTDOWN, flushes and exits 0, and
// every acknowledged write is in the image.
func TestRobustSignalMidLoad(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			const clients, size = 16, 64 << 20
			image := sparseImage(t, size)
			s := startRobustServer(t, "-e", "0", "-t", "-f", "raw", image)

			// One raw client keeps a 32 MiB read in flight by not
			// reading its reply, which is more than the loopback socket
			// buffers hold. Its connection stays open through the
			// shutdown and can send requests after it began.
			holder := dialRawFlags(t, s, newstyleFlags)
			holder.goTransmission(false)
			holder.sendRequest(proto.CmdRead, 0, 1, 0, proto.MaxPayloadSize, nil)

			log := newBlockLog()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for i := range clients {
				c := s.dial(t)
				wg.Add(1)
				go func() {
					defer wg.Done()
					_ = writeBlocks(c, log, int64(i), clients, size/faultBlock, stop)
				}()
			}
			time.Sleep(300 * time.Millisecond)
			require.NoError(t, s.cmd.Process.Signal(sig))
			waitStderr(t, s.proc, "shutting down")

			// New clients are no longer accepted.
			if conn, err := net.DialTimeout(s.network, s.addr, rawTimeout); err == nil {
				require.NoError(t, conn.SetDeadline(time.Now().Add(rawTimeout)))
				n, _ := io.ReadFull(conn, make([]byte, 18))
				assert.Zero(t, n, "greeting sent after the signal")
				conn.Close()
			}

			// Late requests on the holder connection, sent over 400 ms so
			// that the last ones certainly follow the start of shutdown.
			const late = 20
			for i := range uint64(late) {
				holder.sendRequest(proto.CmdFlush, 0, 100+i, 0, 0, nil)
				time.Sleep(20 * time.Millisecond)
			}
			first := holder.readSimpleReply(proto.MaxPayloadSize)
			assert.Equal(t, proto.Errno(0), first.errno, "the read in flight at the signal")
			// Replies may come in any order. The reader checks for
			// shutdown per request in the order it reads them, so once
			// one late request gets ESHUTDOWN all later ones do too.
			errnos := make(map[uint64]proto.Errno, late)
			for range late {
				r := holder.readSimpleReply(0)
				errnos[r.cookie] = r.errno
			}
			require.Len(t, errnos, late, "distinct replies to the late requests")
			shutdownSeen := false
			for i := range uint64(late) {
				errno, ok := errnos[100+i]
				require.True(t, ok, "no reply to late request %d", i)
				if shutdownSeen {
					assert.Equal(t, proto.ESHUTDOWN, errno, "reply to late request %d after an ESHUTDOWN", i)
				} else {
					assert.Contains(t, []proto.Errno{0, proto.ESHUTDOWN}, errno, "reply to late request %d", i)
				}
				shutdownSeen = shutdownSeen || errno == proto.ESHUTDOWN
			}
			assert.True(t, shutdownSeen, "no late request got ESHUTDOWN")
			holder.expectClosed()

			close(stop)
			wg.Wait()
			require.Equal(t, 0, s.wait(rawTimeout), "gonbd exit code after %s:\n%s", sig, s.stderr.String())
			log.check(t, fileBytes(t, image))
		})
	}
}

// waitStderr waits until the process has written substr to stderr.
func waitStderr(t *testing.T, p *proc, substr string) {
	t.Helper()
	deadline := time.Now().Add(rawTimeout)
	for !strings.Contains(p.stderr.String(), substr) {
		require.True(t, time.Now().Before(deadline), "no %q in stderr:\n%s", substr, p.stderr.String())
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRobustDurableAfterSIGKILL writes with FUA, and without FUA followed
// by a completed flush, kills gonbd with SIGKILL and checks the image
// file: for raw directly, for qcow2 after qemu-img check and convert.
func TestRobustDurableAfterSIGKILL(t *testing.T) {
	const size = 16 << 20
	for _, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) {
			image := filepath.Join(t.TempDir(), "disk."+format)
			mustRun(t, requireTool(t, "qemu-img"), "create", "-q", "-f", format, image, fmt.Sprint(size))
			s := startRobustServer(t, "-e", "0", "-t", "-f", format, image)
			c := s.dial(t)

			log := newBlockLog()
			half := int64(size / faultBlock / 2)
			require.NoError(t, writeBlocks(c, log, 0, 2, 2*half, nil, nbd.WriteFUA), "FUA writes")
			require.NoError(t, writeBlocks(c, log, 1, 2, 2*half, nil), "plain writes")
			require.NoError(t, c.Flush(), "flush")

			require.NoError(t, s.cmd.Process.Kill())
			s.wait(rawTimeout)

			raw := image
			if format == "qcow2" {
				r := run(t, "qemu-img", "check", image)
				// Exit status 3 means leaked clusters only, which a
				// killed writer may leave; 2 would be corruption.
				assert.Contains(t, []int{0, 3}, r.code, "qemu-img check:\n%s%s", r.stdout, r.stderr)
				raw = filepath.Join(t.TempDir(), "converted.raw")
				mustRun(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw)
			}
			log.check(t, fileBytes(t, raw))
		})
	}
}

// mountTmpfs mounts a tmpfs of size bytes in a new directory and unmounts
// it at cleanup. It skips the test when the mount fails (no root); the
// in-process ENOSPC test covers the same reply without a mount.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gonbd-full-")
	require.NoError(t, err)
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		os.Remove(dir)
		t.Skipf("mount a %d-byte tmpfs on %s failed (root is required): %v: %s", size, dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
		os.Remove(dir)
	})
	return dir
}

// TestRobustDiskFull serves an 8 MiB image from a 1 MiB tmpfs. Writes
// past the free space get ENOSPC, the connection goes on, data written
// before stays readable, and gonbd neither crashes nor stops serving.
func TestRobustDiskFull(t *testing.T) {
	for _, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) {
			dir := mountTmpfs(t, 1<<20)
			image := filepath.Join(dir, "disk."+format)
			mustRun(t, requireTool(t, "qemu-img"), "create", "-q", "-f", format, image, "8M")
			s := startRobustServer(t, "-e", "0", "-t", "-f", format, image)
			c := s.dial(t)

			var n int64
			var err error
			for n = 0; n < 8<<20/faultBlock; n++ {
				if _, err = c.WriteAt(blockPattern(n), n*faultBlock); err != nil {
					break
				}
			}
			require.Error(t, err, "8 MiB of writes fit in a 1 MiB file system")
			assert.ErrorIs(t, err, proto.ENOSPC, "error of write %d", n)
			require.Positive(t, n, "blocks written before the disk filled")

			got := make([]byte, faultBlock)
			_, err = c.ReadAt(got, 0)
			require.NoError(t, err, "read on the same connection after ENOSPC")
			assert.Equal(t, blockPattern(0), got, "block 0 after ENOSPC")
			require.NoError(t, c.Zero(0, faultBlock), "zero after ENOSPC")

			other := s.dial(t)
			_, err = other.ReadAt(got, faultBlock)
			require.NoError(t, err, "read on a new connection after ENOSPC")
			require.NoError(t, c.Close())
			require.NoError(t, other.Close())

			require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
			code := s.wait(rawTimeout)
			t.Logf("gonbd exit code after SIGTERM on a full disk: %d", code)
			assert.NotEqual(t, -1, code, "gonbd did not exit after SIGTERM")
			assert.NotContains(t, s.stderr.String(), "panic", "gonbd stderr")
			if format == "qcow2" {
				r := run(t, "qemu-img", "check", image)
				assert.Contains(t, []int{0, 3}, r.code, "qemu-img check after ENOSPC:\n%s%s", r.stdout, r.stderr)
			}
		})
	}
}

// faultyBackend is a memory backend that fails reads and writes touching
// [badOff, badOff+badLen) with errno, and Sync while syncFails is set.
type faultyBackend struct {
	*memory.Backend
	badOff, badLen int64
	errno          syscall.Errno
	syncFails      atomic.Bool
}

func (b *faultyBackend) touchesBad(off, n int64) bool {
	return off < b.badOff+b.badLen && b.badOff < off+n
}

func (b *faultyBackend) ReadAt(p []byte, off int64) (int, error) {
	if b.touchesBad(off, int64(len(p))) {
		return 0, &os.PathError{Op: "read", Path: "/dev/faulty", Err: b.errno}
	}
	return b.Backend.ReadAt(p, off)
}

func (b *faultyBackend) WriteAt(p []byte, off int64) (int, error) {
	if b.touchesBad(off, int64(len(p))) {
		return 0, &os.PathError{Op: "write", Path: "/dev/faulty", Err: b.errno}
	}
	return b.Backend.WriteAt(p, off)
}

func (b *faultyBackend) WriteAtFUA(p []byte, off int64) (int, error) {
	return b.WriteAt(p, off)
}

func (b *faultyBackend) Sync() error {
	if b.syncFails.Load() {
		return &os.PathError{Op: "fsync", Path: "/dev/faulty", Err: b.errno}
	}
	return b.Backend.Sync()
}

// TestRobustBackendErrors serves a backend that fails part of its range
// with EIO or ENOSPC. Each failure is an error reply with that errno,
// with and without structured replies, and the connection goes on.
func TestRobustBackendErrors(t *testing.T) {
	const badOff, badLen = 1 << 20, 64 << 10
	for _, tc := range []struct {
		name  string
		errno syscall.Errno
		want  proto.Errno
	}{
		{"EIO", syscall.EIO, proto.EIO},
		{"ENOSPC", syscall.ENOSPC, proto.ENOSPC},
	} {
		errno, want := tc.errno, tc.want
		backend := &faultyBackend{Backend: memory.New(8<<20, false), badOff: badOff, badLen: badLen, errno: errno}
		// Data in the bad range, so that block status does not report
		// it as a hole that a structured read replies to without ReadAt.
		_, err := backend.Backend.WriteAt(bytes.Repeat([]byte{1}, badLen), badOff)
		require.NoError(t, err)
		s, logs := startInProcess(t, nbd.ServerConfig{Exports: []*nbd.Export{{Name: "", Backend: backend}}})

		for _, structured := range []bool{true, false} {
			name := tc.name + "/SimpleReplies"
			if structured {
				name = tc.name + "/StructuredReplies"
			}
			t.Run(name, func(t *testing.T) {
				var opts []nbd.DialOption
				if !structured {
					opts = append(opts, nbd.WithoutStructuredReplies())
				}
				c, err := nbd.DialAddr(t.Context(), s.network, s.addr, opts...)
				require.NoError(t, err)
				defer c.Close()
				buf := make([]byte, 8192)

				_, err = c.ReadAt(buf, badOff+4096)
				assert.ErrorIs(t, err, want, "read of the bad range")
				if structured {
					var re *nbd.RequestError
					require.ErrorAs(t, err, &re)
					assert.Contains(t, re.Message, errno.Error(), "error message")
					assert.NotContains(t, re.Message, "/dev/faulty", "error message reveals a server path")
				}
				_, err = c.ReadAt(buf, 0)
				assert.NoError(t, err, "read of a good range after the failure")

				_, err = c.WriteAt(buf, badOff-4096)
				assert.ErrorIs(t, err, want, "write across the bad range")
				_, err = c.WriteAtWith(buf, badOff, nbd.WriteFUA)
				assert.ErrorIs(t, err, want, "FUA write to the bad range")
				_, err = c.WriteAt(buf, 0)
				assert.NoError(t, err, "write of a good range after the failure")

				backend.syncFails.Store(true)
				assert.ErrorIs(t, c.Flush(), want, "flush while sync fails")
				backend.syncFails.Store(false)
				assert.NoError(t, c.Flush(), "flush after sync recovers")
			})
		}
		assert.Contains(t, logs.String(), "request failed", "server log")
	}
}
