package qcow2

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/require"
)

// expand turns extents into one value per 512-byte sector.
func expand(t testing.TB, exts []export.Extent, size int64) []uint32 {
	t.Helper()
	out := make([]uint32, 0, size/512)
	for _, e := range exts {
		require.Zero(t, e.Length%512, "extent length %d", e.Length)
		for i := int64(0); i < e.Length/512; i++ {
			out = append(out, e.Flags)
		}
	}
	require.Len(t, out, int(size/512))
	return out
}

// statusFromMap converts qemu-img map output into base:allocation flags
// and allocation depths per sector.
func statusFromMap(m []mapEntry) (flags, depth []uint32) {
	for _, e := range m {
		f := uint32(0)
		if !e.Data {
			f = proto.StateHole | proto.StateZero
		}
		d := uint32(0)
		if e.Present {
			d = uint32(e.Depth + 1)
		}
		for i := int64(0); i < e.Length/512; i++ {
			flags = append(flags, f)
			depth = append(depth, d)
		}
	}
	return flags, depth
}

// allExtents collects extents over the whole disk, asking again where a
// reply stops short.
func allExtents(t testing.TB, size int64, get func(context.Context, int64, int64) ([]export.Extent, error)) []export.Extent {
	t.Helper()
	var all []export.Extent
	for off := int64(0); off < size; {
		exts, err := get(context.Background(), off, size-off)
		require.NoError(t, err)
		require.NotEmpty(t, exts)
		for _, e := range exts {
			e.Length = min(e.Length, size-off)
			all = append(all, e)
			off += e.Length
			if off >= size {
				break
			}
		}
	}
	return all
}

func TestExtentsMatchQemuImgMap(t *testing.T) {
	cases := []struct {
		name string
		opts []string
	}{
		{"Cluster64K", nil},
		{"Cluster4K", []string{"cluster_size=4k"}},
		{"ExtendedL2", []string{"extended_l2=on"}},
		{"V2", []string{"compat=0.10"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			base := createImage(t, dir, "base.qcow2", "3M", c.opts...)
			qemuIOWrite(t, "qcow2", base, randomOps(20, 20, 64<<10, 3<<20))
			top := createImage(t, dir, "top.qcow2", "6M", append([]string{"backing_file=base.qcow2", "backing_fmt=qcow2"}, c.opts...)...)
			qemuIOWrite(t, "qcow2", top, randomOps(21, 12, 64<<10, 6<<20))

			// The driver's own writes and zeroes, then QEMU's view of them.
			img := openT(t, top, Options{Discard: true})
			apply(t, img, randomOps(22, 30, 64<<10, 6<<20))
			size, _ := img.Size()
			gotFlags := expand(t, allExtents(t, size, img.Extents), size)
			gotDepth := expand(t, allExtents(t, size, img.AllocationDepth), size)
			require.NoError(t, img.Close())

			wantFlags, wantDepth := statusFromMap(qemuMap(t, top))
			require.Equal(t, wantFlags, gotFlags, "base:allocation per sector")
			// qemu-img map reports the zeroes past the 3 MiB base as
			// unallocated, but qemu-nbd, which gonbd follows, reports
			// them as allocated in the base (depth 2).
			baseEnd := (3 << 20) / 512
			require.Equal(t, wantDepth[:baseEnd], gotDepth[:baseEnd], "allocation depth per sector")
			for i := baseEnd; i < len(gotDepth); i++ {
				if wantDepth[i] == 0 {
					require.Equal(t, uint32(2), gotDepth[i], "allocation depth of sector %d past the base", i)
				}
			}
		})
	}
}

func TestExtentsRawBacking(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	qemu(t, "qemu-img", "create", "-q", "-f", "raw", base, "2M")
	qemuIOWrite(t, "raw", base, []op{{kind: "write", off: 1 << 20, n: 64 << 10, pattern: 1}})
	top := createImage(t, dir, "top.qcow2", "4M", "backing_file=base.raw", "backing_fmt=raw")
	qemuIOWrite(t, "qcow2", top, []op{{kind: "write", off: 0, n: 64 << 10, pattern: 2}})

	img := openT(t, top, Options{ReadOnly: true})
	defer img.Close()
	gotDepth := expand(t, allExtents(t, 4<<20, img.AllocationDepth), 4<<20)
	gotFlags := expand(t, allExtents(t, 4<<20, img.Extents), 4<<20)
	wantFlags, wantDepth := statusFromMap(qemuMap(t, top))
	require.Equal(t, wantDepth[:4096], gotDepth[:4096], "allocation depth per sector")
	require.Equal(t, uint32(2), gotDepth[5000], "allocation depth past the raw base")
	require.Equal(t, wantFlags, gotFlags, "base:allocation per sector")
}
