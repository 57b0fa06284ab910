package memory

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const hole = proto.StateHole | proto.StateZero

func TestMemoryRegistered(t *testing.T) {
	_, ok := export.Lookup("memory")
	assert.True(t, ok)
}

func TestMemoryOpenSize(t *testing.T) {
	b, err := Open(export.Options{"size": "1G"})
	require.NoError(t, err)
	size, err := b.Size()
	require.NoError(t, err)
	assert.Equal(t, int64(1<<30), size)
	assert.Zero(t, b.(*Backend).Allocated())
}

func TestMemoryOpenErrors(t *testing.T) {
	tests := []struct {
		name string
		opts export.Options
		msg  string
	}{
		{"MissingSize", export.Options{}, "memory: missing size"},
		{"BadSize", export.Options{"size": "1Q"}, `memory: invalid size="1Q"`},
		{"NegativeSize", export.Options{"size": "-5"}, `memory: invalid size="-5"`},
		{"UnknownKey", export.Options{"size": "1M", "filename": "x"}, `memory: unknown option "filename"`},
		{"BadReadOnly", export.Options{"size": "1M", "read-only": "2"}, `memory: invalid read-only="2"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(tt.opts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

func TestMemoryWriteReadAcrossPages(t *testing.T) {
	b := New(4*PageSize, false)
	data := bytes.Repeat([]byte("0123456789"), PageSize/5) // two pages' worth
	off := int64(PageSize/2 + 3)

	_, err := b.WriteAt(data, off)
	require.NoError(t, err)
	assert.Equal(t, 3, b.Allocated())

	got := make([]byte, len(data))
	_, err = b.ReadAt(got, off)
	require.NoError(t, err)
	assert.Equal(t, data, got)

	head := make([]byte, 16)
	_, err = b.ReadAt(head, 0)
	require.NoError(t, err)
	assert.Equal(t, make([]byte, 16), head)
}

func TestMemoryZeroFreesWholePages(t *testing.T) {
	b := New(4*PageSize, false)
	_, err := b.WriteAt(bytes.Repeat([]byte{0xff}, 4*PageSize), 0)
	require.NoError(t, err)
	require.Equal(t, 4, b.Allocated())

	// Zero from the middle of page 0 to the middle of page 3: pages 1 and 2
	// are freed, pages 0 and 3 are cleared in part.
	require.NoError(t, b.Zero(PageSize/2, 3*PageSize, 0))
	assert.Equal(t, 2, b.Allocated())

	got := make([]byte, 4*PageSize)
	_, err = b.ReadAt(got, 0)
	require.NoError(t, err)
	want := make([]byte, 4*PageSize)
	for i := range PageSize / 2 {
		want[i] = 0xff
		want[len(want)-1-i] = 0xff
	}
	assert.Equal(t, want, got)
}

func TestMemoryTrimReadsZeroes(t *testing.T) {
	b := New(2*PageSize, false)
	_, err := b.WriteAt([]byte("abc"), 10)
	require.NoError(t, err)
	require.NoError(t, b.Trim(0, 2*PageSize))
	assert.Zero(t, b.Allocated())

	got := make([]byte, 3)
	_, err = b.ReadAt(got, 10)
	require.NoError(t, err)
	assert.Equal(t, make([]byte, 3), got)
}

func TestMemoryExtents(t *testing.T) {
	b := New(8*PageSize, false)
	_, err := b.WriteAt([]byte{1}, 2*PageSize)
	require.NoError(t, err)
	_, err = b.WriteAt([]byte{1}, 3*PageSize+5)
	require.NoError(t, err)

	ext, err := b.Extents(context.Background(), PageSize, 6*PageSize)
	require.NoError(t, err)
	assert.Equal(t, []export.Extent{
		{Length: PageSize, Flags: hole},
		{Length: 2 * PageSize, Flags: 0},
		{Length: 3 * PageSize, Flags: hole},
	}, ext)
}

func TestMemoryExtentsUnaligned(t *testing.T) {
	b := New(2*PageSize, false)
	ext, err := b.Extents(context.Background(), 7, 100)
	require.NoError(t, err)
	assert.Equal(t, []export.Extent{{Length: 100, Flags: hole}}, ext)
}

func TestMemoryOutOfRange(t *testing.T) {
	b := New(PageSize, false)
	_, err := b.ReadAt(make([]byte, 2), PageSize-1)
	assert.Error(t, err)
	_, err = b.WriteAt(make([]byte, 1), -1)
	assert.Error(t, err)
	assert.Error(t, b.Zero(0, PageSize+1, 0))
}

func TestMemoryReadOnly(t *testing.T) {
	b := New(PageSize, true)
	_, err := b.WriteAt([]byte{1}, 0)
	assert.ErrorIs(t, err, export.ErrReadOnly)
	assert.ErrorIs(t, b.Trim(0, 1), export.ErrReadOnly)
	assert.True(t, b.ReadOnly())
}

func TestMemoryConcurrentWriters(t *testing.T) {
	b := New(16*PageSize, false)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := bytes.Repeat([]byte{byte(i + 1)}, PageSize)
			for range 50 {
				_, _ = b.WriteAt(buf, int64(i)*PageSize)
				_, _ = b.ReadAt(make([]byte, PageSize), int64((i+1)%16)*PageSize)
			}
		}()
	}
	wg.Wait()

	for i := range 16 {
		got := make([]byte, 1)
		_, err := b.ReadAt(got, int64(i)*PageSize+100)
		require.NoError(t, err)
		assert.Equal(t, byte(i+1), got[0])
	}
}
