package nbd

import (
	"bytes"
	"context"
	"testing"

	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestServerWithGonbdClient runs gonbd's own client against the server
// over a Unix socket.
func TestServerWithGonbdClient(t *testing.T) {
	l, uri := listenUnix(t)
	b := newTestBackend(1 << 20)
	startServer(t, ServerConfig{Exports: []*Export{{Name: "", Backend: b, AllocationDepth: true}}}, l)

	ctx := context.Background()
	c, err := Dial(ctx, uri, WithMetaContexts(proto.ContextBaseAllocation, proto.ContextAllocationDepth))
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, int64(1<<20), c.Size())
	assert.True(t, c.StructuredReplies())

	data := bytes.Repeat([]byte("nbd!"), 2048)
	_, err = c.WriteAt(data, 4096)
	require.NoError(t, err)
	require.NoError(t, c.Flush())
	got := make([]byte, len(data))
	_, err = c.ReadAt(got, 4096)
	require.NoError(t, err)
	assert.Equal(t, data, got)

	require.NoError(t, c.Zero(0, 4096))
	require.NoError(t, c.Trim(65536, 8192))
	require.NoError(t, c.Cache(0, 65536))

	extents, err := c.BlockStatus(0, 16384, proto.ContextBaseAllocation)
	require.NoError(t, err)
	require.NotEmpty(t, extents)
	assert.Equal(t, proto.StateHole|proto.StateZero, extents[0].Flags)

	depth, err := c.BlockStatus(0, 16384, proto.ContextAllocationDepth)
	require.NoError(t, err)
	require.NotEmpty(t, depth)
	assert.Equal(t, uint32(0), depth[0].Flags)

	// A read over a hole and data comes back whole.
	_, err = c.ReadAt(got, 0)
	require.NoError(t, err)
	assert.Equal(t, make([]byte, 4096), got[:4096])
	assert.Equal(t, data[:4096], got[4096:])
}
