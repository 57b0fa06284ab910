package null

import (
	"context"
	"testing"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNullRegistered(t *testing.T) {
	_, ok := export.Lookup("null")
	assert.True(t, ok)
}

func TestNullReadsZeroes(t *testing.T) {
	b, err := Open(export.Options{"size": "1M"})
	require.NoError(t, err)

	size, err := b.Size()
	require.NoError(t, err)
	assert.Equal(t, int64(1<<20), size)

	_, err = b.WriteAt([]byte("data"), 0)
	require.NoError(t, err)
	p := []byte("xxxx")
	_, err = b.ReadAt(p, 0)
	require.NoError(t, err)
	assert.Equal(t, make([]byte, 4), p)
}

func TestNullDefaultSizeZero(t *testing.T) {
	b, err := Open(export.Options{})
	require.NoError(t, err)
	size, err := b.Size()
	require.NoError(t, err)
	assert.Zero(t, size)
}

func TestNullCapabilities(t *testing.T) {
	b, err := Open(export.Options{"size": "1G"})
	require.NoError(t, err)

	assert.Implements(t, (*export.Trimmer)(nil), b)
	assert.Implements(t, (*export.FastZeroer)(nil), b)
	assert.Implements(t, (*export.Cacher)(nil), b)
	assert.Implements(t, (*export.FUAWriter)(nil), b)
	assert.True(t, b.(export.MultiConner).CanMultiConn())
	assert.False(t, b.(export.ReadOnlyer).ReadOnly())

	ext, err := b.(export.Extenter).Extents(context.Background(), 4096, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, []export.Extent{{Length: 1 << 20, Flags: proto.StateHole | proto.StateZero}}, ext)
}

func TestNullReadOnlyRejectsWrites(t *testing.T) {
	b, err := Open(export.Options{"size": "1M", "read-only": "on"})
	require.NoError(t, err)

	_, err = b.WriteAt([]byte{1}, 0)
	assert.ErrorIs(t, err, export.ErrReadOnly)
	assert.ErrorIs(t, b.(export.Trimmer).Trim(0, 1), export.ErrReadOnly)
	assert.ErrorIs(t, b.(export.Zeroer).Zero(0, 1, 0), export.ErrReadOnly)
}

func TestNullOpenErrors(t *testing.T) {
	tests := []struct {
		name string
		opts export.Options
		msg  string
	}{
		{"BadSize", export.Options{"size": "big"}, `null: invalid size="big"`},
		{"UnknownKey", export.Options{"filename": "x"}, `null: unknown option "filename"`},
		{"BadReadOnly", export.Options{"read-only": "perhaps"}, `null: invalid read-only="perhaps"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(tt.opts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}
