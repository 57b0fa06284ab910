package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gonbd/gonbd/export/memory"
	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Soak parameters. GONBD_SOAK_TIME (a Go duration such as 2m) lengthens
// each mode's run.
const (
	soakClients     = 64
	soakRegion      = 2 << 20 // bytes each client owns
	soakMaxIO       = 256 << 10
	soakDefaultTime = 10 * time.Second
	// soakMaxHWMKiB is a sanity bound on the server's peak RSS under the
	// soak: the requests are at most 256 KiB, so 64 clients should stay
	// far below it.
	soakMaxHWMKiB = 512 << 10
)

func soakDuration(t *testing.T) time.Duration {
	t.Helper()
	s := os.Getenv("GONBD_SOAK_TIME")
	if s == "" {
		return soakDefaultTime
	}
	d, err := time.ParseDuration(s)
	require.NoError(t, err, "GONBD_SOAK_TIME=%q: use a Go duration such as 30s or 2m", s)
	return d
}

// TestSoak runs 64 concurrent clients over TCP against one gonbd per mode
// (plaintext, TLS-PSK, x509). Each client owns a region, writes
// verifiable data, reads it back and compares it with its own copy. After
// the clients leave, the server's open fds return to their count before
// the soak.
func TestSoak(t *testing.T) {
	duration := soakDuration(t)
	for _, mode := range []string{"Plain", "PSK", "X509"} {
		t.Run(mode, func(t *testing.T) {
			args := []string{"-e", "0", "-t", "-f", "raw", sparseImage(t, soakClients*soakRegion)}
			var s *robustServer
			switch mode {
			case "Plain":
				s = startRobustServer(t, args...)
			case "PSK":
				s = startTLSServer(t, pskSetup(t), args...)
			case "X509":
				s = startTLSServer(t, x509Setup(t), args...)
			}
			runSoak(t, s, mode, duration)
		})
	}
}

// soakTotals are the counts all clients of one soak add to.
type soakTotals struct {
	ops, bytes, mismatches, failures atomic.Int64
}

// maxSoakThreads bounds the server's OS threads after a soak round. Go
// keeps idle threads for reuse, so the count never drops back: it is the
// peak of blocking system calls (pread, pwrite, fdatasync) at once, plus
// one thread per CPU and a few for the runtime. Each soak client has at
// most one request in flight, so a count past this bound means threads
// that something holds.
func maxSoakThreads() int { return soakClients + runtime.NumCPU() + 16 }

// runSoak runs two rounds of soakClients clients, half the duration each.
// The second round's clients reconnect and first check what the first
// round left. After each round the open fds are back at their count
// before the soak and the threads within maxSoakThreads.
func runSoak(t *testing.T, s *robustServer, mode string, duration time.Duration) {
	before := settledStats(t, s.pid)
	shadows := make([][]byte, soakClients)
	for i := range shadows {
		shadows[i] = make([]byte, soakRegion)
	}
	for round := range 2 {
		after := soakRound(t, s, fmt.Sprintf("%s round=%d", mode, round+1), duration/2, before, shadows)
		assert.LessOrEqual(t, after.fds, before.fds, "server's open fds after round %d", round+1)
		assert.LessOrEqual(t, after.threads, maxSoakThreads(), "server's threads after round %d", round+1)
		assert.Less(t, after.hwmKiB, memoryBoundKiB(soakMaxHWMKiB), "server's peak RSS in KiB")
	}
}

// soakRound runs soakClients clients until duration has passed, checks
// their results and returns the server's state once they have left.
// shadows holds each client's copy of its region across rounds.
func soakRound(t *testing.T, s *robustServer, name string, duration time.Duration, before procStats, shadows [][]byte) procStats {
	var totals soakTotals
	var wg sync.WaitGroup
	errs := make(chan error, soakClients)
	stop := time.Now().Add(duration)
	for i := range soakClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := soakClient(s, i, shadows[i], stop, &totals); err != nil {
				totals.failures.Add(1)
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		}()
	}
	peakThreads := 0
	for done := waitChan(&wg); ; {
		select {
		case <-done:
		case <-time.After(500 * time.Millisecond):
			peakThreads = max(peakThreads, readProcStats(t, s.pid).threads)
			continue
		}
		break
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	after := waitFDs(t, s.pid, before.fds)
	seconds := duration.Seconds()
	t.Logf("SOAK mode=%s clients=%d seconds=%.0f ops=%d MiB=%d MiB/s=%.0f mismatches=%d failures=%d "+
		"hwm_MiB=%d threads_before=%d threads_peak=%d threads_after=%d fds_before=%d fds_after=%d",
		name, soakClients, seconds, totals.ops.Load(), totals.bytes.Load()>>20, float64(totals.bytes.Load())/seconds/(1<<20),
		totals.mismatches.Load(), totals.failures.Load(), after.hwmKiB>>10,
		before.threads, peakThreads, after.threads, before.fds, after.fds)

	assert.Zero(t, totals.mismatches.Load(), "data mismatches")
	assert.Zero(t, totals.failures.Load(), "clients that failed")
	assert.Positive(t, totals.ops.Load(), "requests completed")
	return after
}

// waitChan returns a channel closed when wg is done.
func waitChan(wg *sync.WaitGroup) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// soakClient connects, reads its whole region, then writes, reads,
// zeroes and flushes random ranges of it until stop, and finally reads
// the whole region again. Every read is checked against the client's copy
// of the region (shadow).
func soakClient(s *robustServer, id int, shadow []byte, stop time.Time, totals *soakTotals) error {
	c, err := s.tryDial()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Close()

	base := int64(id) * soakRegion
	rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	data := rand.NewChaCha8([32]byte{byte(id), 1})
	buf := make([]byte, soakMaxIO)
	got := make([]byte, soakRegion)
	if _, err := c.ReadAt(got, base); err != nil {
		return fmt.Errorf("first read of the region: %w", err)
	}
	if !bytes.Equal(got, shadow) {
		totals.mismatches.Add(1)
	}
	info := c.Info()
	align := max(int64(info.MinBlock), 1)
	canZero := info.Has(proto.FlagSendWriteZeroes)

	for time.Now().Before(stop) {
		length := (1 + rng.Int64N(soakMaxIO/align)) * align
		off := rng.Int64N((soakRegion-length)/align+1) * align
		p := buf[:length]

		switch op := rng.IntN(100); {
		case op < 45:
			_, _ = data.Read(p)
			var opts []nbd.WriteOption
			if op < 5 {
				opts = append(opts, nbd.WriteFUA)
			}
			if _, err := c.WriteAtWith(p, base+off, opts...); err != nil {
				return fmt.Errorf("write %d bytes at %d: %w", length, base+off, err)
			}
			copy(shadow[off:], p)
		case op < 90:
			if _, err := c.ReadAt(p, base+off); err != nil {
				return fmt.Errorf("read %d bytes at %d: %w", length, base+off, err)
			}
			if !bytes.Equal(p, shadow[off:off+length]) {
				totals.mismatches.Add(1)
			}
		case op < 95 && canZero:
			if err := c.Zero(base+off, length); err != nil {
				return fmt.Errorf("zero %d bytes at %d: %w", length, base+off, err)
			}
			clear(shadow[off : off+length])
		default:
			if err := c.Flush(); err != nil {
				return fmt.Errorf("flush: %w", err)
			}
			length = 0
		}
		totals.ops.Add(1)
		totals.bytes.Add(length)
	}

	if _, err := c.ReadAt(got, base); err != nil {
		return fmt.Errorf("final read of the region: %w", err)
	}
	if !bytes.Equal(got, shadow) {
		totals.mismatches.Add(1)
	}
	return nil
}

// TestSoakGoroutinesInProcess runs a short soak against gonbd's NBD server
// inside the test process, where goroutines can be counted: after the
// clients leave, the count returns to where it was before they came.
func TestSoakGoroutinesInProcess(t *testing.T) {
	s, _ := startInProcess(t, nbd.ServerConfig{
		Exports: []*nbd.Export{{Name: "", Backend: memory.New(soakClients*soakRegion, false)}},
	})
	// A first client that comes and goes makes sure the accept loop and
	// its helpers run before the baseline is taken.
	warmup, err := s.tryDial()
	require.NoError(t, err)
	require.NoError(t, warmup.Close())
	before := settledGoroutines()

	shadows := make([][]byte, soakClients)
	for i := range shadows {
		shadows[i] = make([]byte, soakRegion)
	}
	var totals soakTotals
	var wg sync.WaitGroup
	stop := time.Now().Add(min(soakDuration(t), 3*time.Second))
	for i := range soakClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := soakClient(s, i, shadows[i], stop, &totals); err != nil {
				t.Errorf("client %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	assert.Zero(t, totals.mismatches.Load(), "data mismatches")

	deadline := time.Now().Add(rawTimeout)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("goroutines before the soak %d, after %d; %d requests", before, runtime.NumGoroutine(), totals.ops.Load())
	if !assert.LessOrEqual(t, runtime.NumGoroutine(), before, "goroutines after the clients left") {
		var stacks strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
		t.Logf("goroutines:\n%s", stacks.String())
	}
}

// settledGoroutines returns the goroutine count once two readings 100 ms
// apart agree, trying for up to five seconds.
func settledGoroutines() int {
	last := runtime.NumGoroutine()
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		n := runtime.NumGoroutine()
		if n == last {
			return n
		}
		last = n
	}
	return last
}
