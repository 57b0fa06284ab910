package main

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/nbdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// smallExtents is an export that reports one 4 KiB extent per block
// status request, so that mapping it takes one request per 4 KiB, and
// that calls cancel at the cancelAt'th request.
type smallExtents struct {
	size     int64
	calls    atomic.Int64
	cancelAt int64
	cancel   context.CancelFunc
}

func (s *smallExtents) ReadAt(p []byte, off int64) (int, error)  { clear(p); return len(p), nil }
func (s *smallExtents) WriteAt(p []byte, off int64) (int, error) { return 0, export.ErrReadOnly }
func (s *smallExtents) Size() (int64, error)                     { return s.size, nil }
func (s *smallExtents) Sync() error                              { return nil }
func (s *smallExtents) ReadOnly() bool                           { return true }

func (s *smallExtents) Extents(ctx context.Context, off, length int64) ([]export.Extent, error) {
	if s.calls.Add(1) == s.cancelAt && s.cancel != nil {
		s.cancel()
	}
	return []export.Extent{{Length: min(4096, length), Flags: 0}}, nil
}

// TestMapStopsOnSignal cancels the context (as SIGINT or SIGTERM does)
// while --map walks an export one small extent at a time. gonbdinfo must
// stop with an error instead of mapping the rest of the export.
func TestMapStopsOnSignal(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	backend := &smallExtents{size: 4096 * 5000, cancelAt: 50, cancel: cancel}
	srv := nbdtest.Start(t, nbdtest.Backend(backend))

	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"--map", srv.URI()}, &stdout, &stderr)

	assert.Equal(t, exitError, code)
	assert.Empty(t, stdout.String())
	assert.Contains(t, stderr.String(), "--map: interrupted")
	assert.Less(t, backend.calls.Load(), int64(5000), "gonbdinfo mapped the whole export after the signal")
}

// TestMapCoalescesAsItGoes maps an export of many equal extents and checks
// the one coalesced line; appendExtent keeps one entry for the whole run.
func TestMapCoalescesAsItGoes(t *testing.T) {
	backend := &smallExtents{size: 4096 * 300}
	srv := nbdtest.Start(t, nbdtest.Backend(backend))

	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--map", srv.URI()}, &stdout, &stderr)
	require.Equal(t, exitOK, code, stderr.String())
	assert.Equal(t, "         0     1228800    0  data\n", stdout.String())

	var extents []nbd.BlockExtent
	for i := range int64(1000) {
		extents = appendExtent(extents, nbd.BlockExtent{Offset: i * 512, Length: 512, Flags: 3})
	}
	assert.Equal(t, []nbd.BlockExtent{{Offset: 0, Length: 512000, Flags: 3}}, extents)
}
