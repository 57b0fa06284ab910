package file

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const hole = proto.StateHole | proto.StateZero

// newImage creates a sparse image of size bytes in a temporary directory.
func newImage(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
	return path
}

func open(t *testing.T, opts export.Options) *Backend {
	t.Helper()
	b, err := Open(opts)
	require.NoError(t, err)
	t.Cleanup(func() { b.(*Backend).Close() })
	return b.(*Backend)
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return data
}

func TestFileRegistered(t *testing.T) {
	for _, name := range []string{"file", "raw"} {
		_, ok := export.Lookup(name)
		assert.True(t, ok, name)
	}
}

func TestFileOpenErrors(t *testing.T) {
	img := newImage(t, 4096)
	tests := []struct {
		name string
		opts export.Options
		msg  string
	}{
		{"MissingFilename", export.Options{}, "file: missing filename"},
		{"NotFound", export.Options{"filename": "/nonexistent/disk.img"}, "open /nonexistent/disk.img: "},
		{"Directory", export.Options{"filename": t.TempDir()}, "is a directory"},
		{"BadCache", export.Options{"filename": img, "cache": "fast"}, `file: invalid cache="fast"`},
		{"BadDiscard", export.Options{"filename": img, "discard": "yes"}, `file: invalid discard="yes"`},
		{"BadDetectZeroes", export.Options{"filename": img, "detect-zeroes": "1"}, `file: invalid detect-zeroes="1"`},
		{"DetectUnmapWithoutDiscard", export.Options{"filename": img, "detect-zeroes": "unmap"}, "needs discard=unmap"},
		{"BadOffset", export.Options{"filename": img, "offset": "x"}, `file: invalid offset="x"`},
		{"OffsetPastEnd", export.Options{"filename": img, "offset": "8192"}, "offset 8192 is past the end"},
		{"UnknownKey", export.Options{"filename": img, "size": "1G"}, `file: unknown option "size"`},
		{"Snapshot", export.Options{"filename": img, "snapshot": "on"}, "snapshot mode (-s) is not supported for raw images: serve a qcow2 overlay, made with qemu-img create -f qcow2 -b IMAGE -F raw OVERLAY"},
		{"LoadSnapshot", export.Options{"filename": img, "load-snapshot": "s1"}, "-l needs -f qcow2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(tt.opts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

func TestFileReadWrite(t *testing.T) {
	img := newImage(t, 1<<20)
	b := open(t, export.Options{"filename": img})

	size, err := b.Size()
	require.NoError(t, err)
	assert.Equal(t, int64(1<<20), size)

	data := randomBytes(10000, 1)
	_, err = b.WriteAt(data, 12345)
	require.NoError(t, err)
	require.NoError(t, b.Sync())

	got := make([]byte, len(data))
	_, err = b.ReadAt(got, 12345)
	require.NoError(t, err)
	assert.Equal(t, data, got)
	assert.Equal(t, data, readFile(t, img)[12345:12345+len(data)])
}

func TestFileOffset(t *testing.T) {
	img := newImage(t, 8192)
	b := open(t, export.Options{"filename": img, "offset": "1024"})

	size, err := b.Size()
	require.NoError(t, err)
	assert.Equal(t, int64(8192-1024), size)

	_, err = b.WriteAt([]byte("at zero"), 0)
	require.NoError(t, err)
	assert.Equal(t, []byte("at zero"), readFile(t, img)[1024:1031])

	_, err = b.ReadAt(make([]byte, 2), size-1)
	assert.Error(t, err, "a read past the export end must fail")
}

func TestFileReadOnly(t *testing.T) {
	img := newImage(t, 4096)
	b := open(t, export.Options{"filename": img, "read-only": "on"})

	assert.True(t, b.ReadOnly())
	_, err := b.WriteAt([]byte{1}, 0)
	assert.ErrorIs(t, err, export.ErrReadOnly)
	assert.ErrorIs(t, b.Trim(0, 4096), export.ErrReadOnly)
	assert.ErrorIs(t, b.Zero(0, 4096, 0), export.ErrReadOnly)
	_, err = b.WriteAtFUA([]byte{1}, 0)
	assert.ErrorIs(t, err, export.ErrReadOnly)
}

func TestFileReadOnlyOpensUnwritableFile(t *testing.T) {
	img := newImage(t, 4096)
	require.NoError(t, os.Chmod(img, 0o444))
	if os.Geteuid() == 0 {
		t.Skip("root can write to a read-only file")
	}
	_, err := Open(export.Options{"filename": img})
	assert.Error(t, err)
	open(t, export.Options{"filename": img, "read-only": "on"})
}

func TestFileExtents(t *testing.T) {
	img := newImage(t, 4<<20)
	b := open(t, export.Options{"filename": img})
	_, err := b.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 1<<20)
	require.NoError(t, err)

	ext, err := b.Extents(context.Background(), 0, 4<<20)
	require.NoError(t, err)
	assert.Equal(t, []export.Extent{
		{Length: 1 << 20, Flags: hole},
		{Length: 1 << 20, Flags: 0},
		{Length: 2 << 20, Flags: hole},
	}, ext)
}

func TestFileExtentsWithOffset(t *testing.T) {
	img := newImage(t, 4<<20)
	b := open(t, export.Options{"filename": img, "offset": "1M"})
	_, err := b.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0)
	require.NoError(t, err)

	ext, err := b.Extents(context.Background(), 0, 3<<20)
	require.NoError(t, err)
	assert.Equal(t, []export.Extent{
		{Length: 1 << 20, Flags: 0},
		{Length: 2 << 20, Flags: hole},
	}, ext)
}

func TestFileTrimIgnoredByDefault(t *testing.T) {
	img := newImage(t, 1<<20)
	b := open(t, export.Options{"filename": img})
	data := bytes.Repeat([]byte{7}, 1<<20)
	_, err := b.WriteAt(data, 0)
	require.NoError(t, err)

	require.NoError(t, b.Trim(0, 1<<20))
	assert.Equal(t, data, readFile(t, img), "discard=ignore must keep the data")
}

func TestFileTrimUnmapPunchesHole(t *testing.T) {
	img := newImage(t, 1<<20)
	b := open(t, export.Options{"filename": img, "discard": "unmap"})
	_, err := b.WriteAt(bytes.Repeat([]byte{7}, 1<<20), 0)
	require.NoError(t, err)

	require.NoError(t, b.Trim(0, 1<<20))
	assert.Equal(t, make([]byte, 1<<20), readFile(t, img))
	ext, err := b.Extents(context.Background(), 0, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, []export.Extent{{Length: 1 << 20, Flags: hole}}, ext)
}

func TestFileZero(t *testing.T) {
	tests := []struct {
		name     string
		opts     export.Options
		flags    export.ZeroFlags
		wantHole bool
	}{
		{"ZeroRange", export.Options{}, 0, false},
		{"MayTrimWithoutUnmap", export.Options{}, export.ZeroMayTrim, false},
		{"MayTrimWithUnmap", export.Options{"discard": "unmap"}, export.ZeroMayTrim, true},
		{"NoHoleWithUnmap", export.Options{"discard": "unmap"}, 0, false},
		{"Fast", export.Options{}, export.ZeroFast, false},
		{"Direct", export.Options{"cache": "none"}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := newImage(t, 1<<20)
			tt.opts["filename"] = img
			b := open(t, tt.opts)
			_, err := b.WriteAt(bytes.Repeat([]byte{7}, 1<<20), 0)
			require.NoError(t, err)

			require.NoError(t, b.Zero(4096, 512<<10, tt.flags))

			want := bytes.Repeat([]byte{7}, 1<<20)
			clear(want[4096 : 4096+512<<10])
			assert.Equal(t, want, readFile(t, img))

			ext, err := b.Extents(context.Background(), 4096, 512<<10)
			require.NoError(t, err)
			assert.Equal(t, tt.wantHole, ext[0].Flags&proto.StateHole != 0)
		})
	}
}

func TestFileDetectZeroes(t *testing.T) {
	img := newImage(t, 1<<20)
	b := open(t, export.Options{"filename": img, "discard": "unmap", "detect-zeroes": "unmap"})
	_, err := b.WriteAt(bytes.Repeat([]byte{7}, 1<<20), 0)
	require.NoError(t, err)

	_, err = b.WriteAt(make([]byte, 256<<10), 0)
	require.NoError(t, err)

	ext, err := b.Extents(context.Background(), 0, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, export.Extent{Length: 256 << 10, Flags: hole}, ext[0])
}

func TestFileFUAAndCache(t *testing.T) {
	img := newImage(t, 1<<20)
	b := open(t, export.Options{"filename": img})

	_, err := b.WriteAtFUA([]byte("durable"), 100)
	require.NoError(t, err)
	assert.Equal(t, []byte("durable"), readFile(t, img)[100:107])
	assert.NoError(t, b.Cache(0, 1<<20))
	assert.True(t, b.CanMultiConn())
	assert.True(t, b.CanFastZero())
}

func TestFileCacheModes(t *testing.T) {
	for _, mode := range []string{"none", "writeback", "writethrough", "directsync", "unsafe"} {
		t.Run(mode, func(t *testing.T) {
			img := newImage(t, 64<<10)
			b := open(t, export.Options{"filename": img, "cache": mode})
			data := randomBytes(5000, 2)
			_, err := b.WriteAt(data, 3)
			require.NoError(t, err)
			require.NoError(t, b.Sync())

			got := make([]byte, len(data))
			_, err = b.ReadAt(got, 3)
			require.NoError(t, err)
			assert.Equal(t, data, got)
			assert.Equal(t, data, readFile(t, img)[3:3+len(data)])
		})
	}
}

// TestFileDirectUnaligned writes and reads unaligned ranges with O_DIRECT,
// including the partial block at the end of a file whose size is not a
// multiple of the alignment, and checks the file never grows.
func TestFileDirectUnaligned(t *testing.T) {
	const size = 100000 // not a multiple of 4096
	img := newImage(t, size)
	b := open(t, export.Options{"filename": img, "cache": "none", "offset": "3"})
	require.NotNil(t, b.direct)

	shadow := make([]byte, size)
	r := rand.New(rand.NewPCG(3, 3))
	for i := range 200 {
		off := r.Int64N(size - 3)
		n := 1 + r.Int64N(min(20000, size-3-off))
		data := randomBytes(int(n), uint64(i))
		_, err := b.WriteAt(data, off)
		require.NoError(t, err)
		copy(shadow[3+off:], data)

		got := make([]byte, n)
		_, err = b.ReadAt(got, off)
		require.NoError(t, err)
		require.Equal(t, data, got, "read back at %d+%d", off, n)
	}
	assert.Equal(t, shadow, readFile(t, img))
}

func TestFileDirectConcurrentUnaligned(t *testing.T) {
	img := newImage(t, 64<<10)
	b := open(t, export.Options{"filename": img, "cache": "none"})

	// Each writer owns bytes i, i+16, i+32, ... so writers share blocks but
	// never bytes; a lost read-modify-write update shows as a wrong byte.
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := int64(w); off < 64<<10; off += 16 * 97 {
				_, _ = b.WriteAt([]byte{byte(w + 1)}, off)
			}
		}()
	}
	wg.Wait()

	data := readFile(t, img)
	for w := range 16 {
		for off := w; off < 64<<10; off += 16 * 97 {
			require.Equal(t, byte(w+1), data[off], "byte %d", off)
		}
	}
}

func TestFileAllocationDepth(t *testing.T) {
	b := open(t, export.Options{"filename": newImage(t, 1<<20)})
	ext, err := b.AllocationDepth(context.Background(), 4096, 8192)
	require.NoError(t, err)
	assert.Equal(t, []export.Extent{{Length: 8192, Flags: 1}}, ext)
}
