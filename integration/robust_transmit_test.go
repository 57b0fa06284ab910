package integration

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gonbd/gonbd/export/memory"
	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// robustImageSize is the size of the images the transmission tests serve.
const robustImageSize = 64 << 20

// goRaw connects a raw client and enters transmission.
func goRaw(t *testing.T, s *robustServer, structured bool) *rawClient {
	t.Helper()
	c := dialRawFlags(t, s, newstyleFlags)
	c.goTransmission(structured)
	return c
}

// expectErrno reads a simple reply and checks its cookie and error.
func (c *rawClient) expectErrno(cookie uint64, want proto.Errno) {
	c.t.Helper()
	r := c.readSimpleReply(0)
	assert.Equal(c.t, cookie, r.cookie, "reply cookie")
	assert.Equal(c.t, want, r.errno, "reply error for cookie %d", cookie)
}

// expectReadWorks sends a 4 KiB read and checks that it succeeds, which
// shows that the connection survived what came before.
func (c *rawClient) expectReadWorks(cookie uint64) {
	c.t.Helper()
	c.sendRequest(proto.CmdRead, 0, cookie, 0, 4096, nil)
	r := c.readSimpleReply(4096)
	require.Equal(c.t, cookie, r.cookie, "reply cookie")
	require.Equal(c.t, proto.Errno(0), r.errno, "read after the bad request")
}

func TestRobustTransmitWritable(t *testing.T) {
	s := startRobustServer(t, "-e", "0", "-t", "-f", "raw", sparseImage(t, robustImageSize))
	runAttacks(t, s, transmitAttacks())
}

func TestRobustTransmitReadOnly(t *testing.T) {
	s := startRobustServer(t, "-e", "0", "-t", "-r", "-f", "raw", sparseImage(t, robustImageSize))
	s.readOnly = true
	runAttacks(t, s, readOnlyAttacks())
}

// transmitAttacks break the transmission phase of a writable export.
// Request errors get an errno reply and the connection goes on; a
// request that cannot be framed ends the connection.
func transmitAttacks() []attack {
	return []attack{
		{"BadRequestMagic", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			c.write(bytes.Repeat([]byte{0xee}, proto.RequestHeaderSize))
			c.expectClosed()
		}},
		{"UnknownCommand", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			c.sendRequest(proto.Command(0x7f), 0, 1, 0, 0, nil)
			c.expectErrno(1, proto.EINVAL)
			c.expectReadWorks(2)
		}},
		{"UnknownCommandFlag", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			c.sendRequest(proto.CmdRead, proto.CommandFlags(1<<15), 1, 0, 4096, nil)
			c.expectErrno(1, proto.EINVAL)
			c.expectReadWorks(2)
		}},
		{"FlagDFWithoutStructuredReplies", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			c.sendRequest(proto.CmdRead, proto.CmdFlagDF, 1, 0, 4096, nil)
			c.expectErrno(1, proto.EINVAL)
			c.expectReadWorks(2)
		}},
		{"ReadPastEnd", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			c.sendRequest(proto.CmdRead, 0, 1, robustImageSize-4096, 8192, nil)
			c.expectErrno(1, proto.EINVAL)
			c.expectReadWorks(2)
		}},
		{"WritePastEnd", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			c.sendRequest(proto.CmdWrite, 0, 1, robustImageSize-4096, 8192, make([]byte, 8192))
			c.expectErrno(1, proto.ENOSPC)
			c.expectReadWorks(2)
		}},
		{"OffsetWrapsAround", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			c.sendRequest(proto.CmdRead, 0, 1, 1<<64-4096, 8192, nil)
			c.expectErrno(1, proto.EINVAL)
			c.sendRequest(proto.CmdTrim, 0, 2, 1<<64-4096, 8192, nil)
			c.expectErrno(2, proto.EINVAL)
			c.expectReadWorks(3)
		}},
		{"ReadOverMaxPayload", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			c.sendRequest(proto.CmdRead, 0, 1, 0, proto.MaxPayloadSize+1, nil)
			c.expectErrno(1, proto.EINVAL)
			c.expectReadWorks(2)
		}},
		{"ReadOverMaxPayloadWithDF", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, true)
			c.sendRequest(proto.CmdRead, proto.CmdFlagDF, 1, 0, proto.MaxPayloadSize+1, nil)
			r := c.readStructuredReply()
			assert.Equal(t, uint64(1), r.cookie, "reply cookie")
			assert.Equal(t, proto.EOVERFLOW, r.errno, "reply error")
		}},
		{"WriteOverMaxPayload", func(t *testing.T, s *robustServer) {
			// The data of a write past the maximum cannot be skipped
			// safely, so the server hangs up.
			c := goRaw(t, s, false)
			c.sendRequest(proto.CmdWrite, 0, 1, 0, 64<<20, nil)
			c.expectClosed()
		}},
		{"BlockStatusWithoutMetaContext", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, true)
			c.sendRequest(proto.CmdBlockStatus, 0, 1, 0, 4096, nil)
			r := c.readStructuredReply()
			assert.Equal(t, proto.EINVAL, r.errno, "reply error")
		}},
		{"DuplicateCookies", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			for range 16 {
				c.sendRequest(proto.CmdFlush, 0, 7, 0, 0, nil)
			}
			for range 16 {
				c.expectErrno(7, 0)
			}
		}},
		{"VanishMidWrite", func(t *testing.T, s *robustServer) {
			// Half of a 1 MiB write, then the client is gone: the
			// partial request is dropped and nothing reaches the disk.
			const off = 32 << 20
			c := goRaw(t, s, false)
			c.sendRequest(proto.CmdWrite, 0, 1, off, 1<<20, bytes.Repeat([]byte{0xab}, 512<<10))
			require.NoError(t, c.conn.Close())

			good := s.dial(t)
			got := make([]byte, 1<<20)
			_, err := good.ReadAt(got, off)
			require.NoError(t, err)
			assert.Equal(t, make([]byte, 1<<20), got, "data of the unfinished write")
		}},
		{"VanishWithRequestsInFlight", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			var batch []byte
			for i := range uint64(32) {
				r := proto.Request{Command: proto.CmdRead, Cookie: i, Offset: i << 20, Length: 1 << 20}
				batch = append(batch, r.Encode(make([]byte, proto.RequestHeaderSize))...)
			}
			c.write(batch)
			require.NoError(t, c.conn.Close())
		}},
		{"DiscWithRequestsInFlight", func(t *testing.T, s *robustServer) {
			// NBD_CMD_DISC behind pipelined reads: the reads still get
			// their replies, then the server closes.
			c := goRaw(t, s, false)
			for i := range uint64(8) {
				c.sendRequest(proto.CmdRead, 0, i, 0, 64<<10, nil)
			}
			c.sendRequest(proto.CmdDisc, 0, 99, 0, 0, nil)
			seen := map[uint64]bool{}
			for range 8 {
				r := c.readSimpleReply(64 << 10)
				assert.Equal(t, proto.Errno(0), r.errno)
				seen[r.cookie] = true
			}
			assert.Len(t, seen, 8, "distinct replies before the disconnect")
			c.expectClosed()
		}},
	}
}

// readOnlyAttacks modify a read-only export: each gets EPERM, or EINVAL
// for a flag the export did not advertise, and the connection goes on.
func readOnlyAttacks() []attack {
	return []attack{
		{"WriteReadOnly", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			c.sendRequest(proto.CmdWrite, 0, 1, 0, 8192, make([]byte, 8192))
			c.expectErrno(1, proto.EPERM)
			c.expectReadWorks(2)
		}},
		{"TrimReadOnly", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			c.sendRequest(proto.CmdTrim, 0, 1, 0, 8192, nil)
			c.expectErrno(1, proto.EPERM)
			c.expectReadWorks(2)
		}},
		{"WriteZeroesReadOnly", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			c.sendRequest(proto.CmdWriteZeroes, 0, 1, 0, 8192, nil)
			c.expectErrno(1, proto.EPERM)
			c.expectReadWorks(2)
		}},
		{"FUANotAdvertised", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			c.sendRequest(proto.CmdFlush, proto.CmdFlagFUA, 1, 0, 0, nil)
			c.expectErrno(1, proto.EINVAL)
			c.expectReadWorks(2)
		}},
		{"WriteOverMaxPayloadReadOnly", func(t *testing.T, s *robustServer) {
			c := goRaw(t, s, false)
			c.sendRequest(proto.CmdWrite, 0, 1, 0, 64<<20, nil)
			c.expectClosed()
		}},
	}
}

// maxStuckGrowthKiB bounds the peak RSS growth a client that never reads
// its replies may cause. The server holds at most 64 MiB of payload per
// connection (2 * 32 MiB); the client asks for 2 GiB of reads.
const maxStuckGrowthKiB = 160 << 10

// TestRobustTransmitStuckReader pipelines 2 GiB of reads and never reads
// a reply. The server's memory stays bounded by its per-connection payload
// budget and other clients keep working.
func TestRobustTransmitStuckReader(t *testing.T) {
	s := startRobustServer(t, "-e", "0", "-t", "-f", "raw", randomImage(t, robustImageSize, 7))
	good := s.dial(t)
	checkServes(t, good, 0, 1)
	before := settledStats(t, s.pid)

	stuck := dialRawFlags(t, s, newstyleFlags)
	require.NoError(t, stuck.conn.(*net.TCPConn).SetReadBuffer(4096))
	stuck.goTransmission(false)
	var batch []byte
	for i := range uint64(64) {
		r := proto.Request{Command: proto.CmdRead, Cookie: i, Offset: 0, Length: proto.MaxPayloadSize}
		batch = append(batch, r.Encode(make([]byte, proto.RequestHeaderSize))...)
	}
	stuck.write(batch)

	for i := range 16 {
		checkServes(t, good, int64(i+1)<<20, byte(i))
	}
	second := s.dial(t)
	checkServes(t, second, 40<<20, 9)

	during := readProcStats(t, s.pid)
	t.Logf("before: %s; with the stuck client: %s", before, during)
	assert.LessOrEqual(t, during.hwmKiB-before.rssKiB, memoryBoundKiB(maxStuckGrowthKiB), "peak RSS growth in KiB")

	require.NoError(t, stuck.conn.Close())
	require.NoError(t, second.Close())
	after := waitFDs(t, s.pid, before.fds)
	assert.LessOrEqual(t, after.fds, before.fds, "open fds after the stuck client left")
	checkServes(t, good, 0, 3)
}

// startInProcess serves cfg's exports on a loopback port with gonbd's
// NBD server in the test process, logging to the returned buffer.
func startInProcess(t *testing.T, cfg nbd.ServerConfig) (*robustServer, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})
	cfg.Persistent = true
	srv, err := nbd.NewServer(cfg)
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return &robustServer{network: "tcp", addr: l.Addr().String()}, logs
}

// waitLog waits until the log contains substr at least n times.
func waitLog(t *testing.T, logs *logBuffer, substr string, n int) {
	t.Helper()
	deadline := time.Now().Add(rawTimeout)
	for strings.Count(logs.String(), substr) < n {
		if time.Now().After(deadline) {
			t.Fatalf("log has %d of %d lines with %q:\n%s", strings.Count(logs.String(), substr), n, substr, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRobustWriteTimeoutStuckClients checks that the write timeout closes
// clients that stop reading, in plaintext and over both kinds of TLS,
// while a well-behaved client keeps working. gonbd's command line keeps
// the 60 s default, so the test serves in-process with a short timeout.
func TestRobustWriteTimeoutStuckClients(t *testing.T) {
	const stuckClients = 8
	for _, mode := range []string{"Plain", "PSK", "X509"} {
		t.Run(mode, func(t *testing.T) {
			cfg := nbd.ServerConfig{
				Exports:      []*nbd.Export{{Name: "", Backend: memory.New(robustImageSize, false)}},
				WriteTimeout: 500 * time.Millisecond,
			}
			var setup tlsSetup
			switch mode {
			case "PSK":
				setup = pskSetup(t)
			case "X509":
				setup = x509Setup(t)
			}
			if setup.server != nil {
				cfg.TLS, cfg.TLSMode = setup.server, nbd.TLSRequire
			}
			s, logs := startInProcess(t, cfg)
			s.tls = setup.client
			good := s.dial(t)

			for range stuckClients {
				c := dialRawFlags(t, s, newstyleFlags)
				require.NoError(t, c.conn.(*net.TCPConn).SetReadBuffer(4096))
				if s.tls != nil {
					c.startTLS(s)
				}
				c.goTransmission(false)
				var batch []byte
				for i := range uint64(16) {
					r := proto.Request{Command: proto.CmdRead, Cookie: i, Length: 4 << 20}
					batch = append(batch, r.Encode(make([]byte, proto.RequestHeaderSize))...)
				}
				c.write(batch)
			}
			checkServes(t, good, 0, 1)

			waitLog(t, logs, "i/o timeout", stuckClients)
			checkServes(t, good, 0, 2)
		})
	}
}

// gatedBackend is a memory backend whose reads wait for a gate to open,
// and which records how many reads ran at once.
type gatedBackend struct {
	*memory.Backend
	gate chan struct{}

	mu      sync.Mutex
	running int
	peak    int
}

func (b *gatedBackend) ReadAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	b.running++
	b.peak = max(b.peak, b.running)
	b.mu.Unlock()

	<-b.gate

	b.mu.Lock()
	b.running--
	b.mu.Unlock()
	return b.Backend.ReadAt(p, off)
}

func (b *gatedBackend) counts() (running, peak int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.running, b.peak
}

// TestRobustInFlightCap sends 200 pipelined reads to a server that allows
// 8 requests in flight per connection and whose backend holds every read:
// exactly 8 reach the backend, and all 200 get replies once it resumes.
func TestRobustInFlightCap(t *testing.T) {
	const maxInFlight, requests = 8, 200
	backend := &gatedBackend{Backend: memory.New(robustImageSize, false), gate: make(chan struct{})}
	s, _ := startInProcess(t, nbd.ServerConfig{
		Exports:     []*nbd.Export{{Name: "", Backend: backend}},
		MaxInFlight: maxInFlight,
	})

	c := goRaw(t, s, false)
	var batch []byte
	for i := range uint64(requests) {
		r := proto.Request{Command: proto.CmdRead, Cookie: i, Offset: i * 4096, Length: 4096}
		batch = append(batch, r.Encode(make([]byte, proto.RequestHeaderSize))...)
	}
	c.write(batch)

	deadline := time.Now().Add(rawTimeout)
	for running, _ := backend.counts(); running < maxInFlight; running, _ = backend.counts() {
		require.True(t, time.Now().Before(deadline), "only %d reads reached the backend", running)
		time.Sleep(10 * time.Millisecond)
	}
	// NOTE: this only shows that no ninth read arrived within 200 ms;
	// the peak check below catches one that arrives later.
	time.Sleep(200 * time.Millisecond)
	running, _ := backend.counts()
	assert.Equal(t, maxInFlight, running, "reads in the backend at once")

	close(backend.gate)
	seen := make(map[uint64]bool, requests)
	for range requests {
		r := c.readSimpleReply(4096)
		require.Equal(t, proto.Errno(0), r.errno)
		seen[r.cookie] = true
	}
	assert.Len(t, seen, requests, "distinct replies")
	_, peak := backend.counts()
	assert.Equal(t, maxInFlight, peak, "peak reads in the backend at once")
}

// TestRobustConnectionCap checks -e 2 against qemu-nbd: with two clients
// connected, a third connects at the TCP level but gets no greeting until
// one of the two leaves.
func TestRobustConnectionCap(t *testing.T) {
	for _, name := range []string{"gonbd", "qemu-nbd"} {
		t.Run(name, func(t *testing.T) {
			args := []string{"-e", "2", "-t", "-f", "raw", sparseImage(t, robustImageSize)}
			var srv server
			if name == "gonbd" {
				srv = serveUnix(t, args...)
			} else {
				srv = serveQemuNbd(t, args...)
			}
			s := &robustServer{proc: srv.proc, network: "unix", addr: strings.TrimPrefix(srv.uri, "nbd+unix:///?socket=")}
			first := s.dial(t)
			second := s.dial(t)

			third, err := net.DialTimeout(s.network, s.addr, rawTimeout)
			require.NoError(t, err)
			defer third.Close()
			// NOTE: an absence within one second: a server that sent the
			// greeting later than that would pass.
			require.NoError(t, third.SetReadDeadline(time.Now().Add(time.Second)))
			_, err = third.Read(make([]byte, 1))
			assert.True(t, isTimeout(err), "third client got a greeting or was closed while two were connected: %v", err)

			checkServes(t, first, 0, 1)
			require.NoError(t, first.Close())
			c := &rawClient{t: t, conn: third}
			c.readGreeting()
			c.write([]byte{0, 0, 0, byte(newstyleFlags)})
			c.goTransmission(false)
			c.expectReadWorks(1)
			checkServes(t, second, 1<<20, 2)
		})
	}
}
