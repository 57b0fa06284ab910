package qcow2

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// formatCase is one way qemu-img lays out an image.
type formatCase struct {
	name    string
	size    int64
	cluster int64
	opts    []string
}

var formatCases = []formatCase{
	{"V2Cluster64K", 8 << 20, 64 << 10, []string{"compat=0.10"}},
	{"V2Cluster512", 4 << 20, 512, []string{"compat=0.10", "cluster_size=512"}},
	{"V3Cluster64K", 8 << 20, 64 << 10, []string{"compat=1.1"}},
	{"V3Cluster512", 4 << 20, 512, []string{"cluster_size=512"}},
	{"V3Cluster4K", 8 << 20, 4 << 10, []string{"cluster_size=4k"}},
	{"V3Cluster2M", 32 << 20, 2 << 20, []string{"cluster_size=2M"}},
	{"Refcount1", 8 << 20, 64 << 10, []string{"refcount_bits=1"}},
	{"Refcount4Cluster4K", 8 << 20, 4 << 10, []string{"refcount_bits=4", "cluster_size=4k"}},
	{"Refcount64", 8 << 20, 64 << 10, []string{"refcount_bits=64"}},
	{"Refcount64Cluster512", 8 << 20, 512, []string{"refcount_bits=64", "cluster_size=512"}},
	{"LazyRefcounts", 8 << 20, 64 << 10, []string{"lazy_refcounts=on"}},
	{"ExtendedL2", 8 << 20, 64 << 10, []string{"extended_l2=on"}},
	{"ExtendedL2Cluster2M", 32 << 20, 2 << 20, []string{"extended_l2=on", "cluster_size=2M"}},
}

// fixedOps covers partial clusters, runs across clusters, overwrites in
// place, zeroing and trimming, scaled to the cluster size.
func fixedOps(cs, size int64) []op {
	return []op{
		{kind: "write", off: 0, n: 4096 + 512, pattern: 1},
		{kind: "write", off: 3*cs + 100, n: 777, pattern: 2},
		{kind: "write", off: 5*cs - 1000, n: 4*cs + 3000, pattern: 3},
		{kind: "write", off: 5 * cs, n: 1000, pattern: 4},
		{kind: "zero", off: 6 * cs, n: 2 * cs},
		{kind: "zero", off: 9*cs + 11, n: 100},
		{kind: "zerotrim", off: 7 * cs, n: 3*cs - 7},
		{kind: "trim", off: 5 * cs, n: cs},
		{kind: "write", off: size - 5000, n: 5000, pattern: 5},
		{kind: "write", off: size / 4, n: min(1<<20, size/4), pattern: 6},
		{kind: "write", off: 6*cs + 512, n: 512, pattern: 7},
	}
}

// randomOps returns a reproducible mix of requests.
func randomOps(seed uint64, count int, cs, size int64) []op {
	rng := rand.New(rand.NewPCG(seed, 7))
	ops := make([]op, 0, count)
	for i := 0; i < count; i++ {
		o := op{off: rng.Int64N(size), pattern: byte(i + 16)}
		o.n = min(1+rng.Int64N(256<<10), size-o.off)
		switch k := rng.IntN(10); {
		case k < 7:
			o.kind = "write"
		case k < 8:
			o.kind = "zero"
		case k < 9:
			o.kind = "zerotrim"
		default:
			o.kind = "trim"
			o.off &^= cs - 1
			o.n = max(cs, o.n&^(cs-1))
			o.n = min(o.n, size-o.off)
		}
		ops = append(ops, o)
	}
	return ops
}

func TestWriteFormats(t *testing.T) {
	for _, c := range formatCases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := createImage(t, dir, "disk.qcow2", itoa(c.size), c.opts...)

			// Data QEMU wrote first, read back through the driver.
			qemuIOWrite(t, "qcow2", path, []op{
				{kind: "write", off: c.cluster, n: 3 * c.cluster, pattern: 0x51},
				{kind: "write", off: 2*c.cluster + 17, n: 100, pattern: 0x52},
				{kind: "zero", off: 3 * c.cluster, n: c.cluster},
			})
			ref := toRaw(t, path)
			img := openT(t, path, Options{Discard: true})
			requireReadsAs(t, img, ref)

			ops := append(fixedOps(c.cluster, c.size), randomOps(1, 150, c.cluster, c.size)...)
			apply(t, img, ops)
			applyRaw(t, ref, ops)
			requireReadsAs(t, img, ref)
			require.NoError(t, img.Close())

			requireClean(t, path)
			requireSame(t, path, ref)
		})
	}
}

func TestWriteCompressed(t *testing.T) {
	cases := []struct {
		name string
		opts []string
	}{
		{"Zlib64K", []string{"cluster_size=64k"}},
		{"Zlib4K", []string{"cluster_size=4k"}},
		{"Zstd64K", []string{"cluster_size=64k", "compression_type=zstd"}},
		{"ZlibV2", []string{"compat=0.10"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src.raw")
			qemu(t, "qemu-img", "create", "-q", "-f", "raw", src, "4M")
			applyRaw(t, src, append(randomOps(2, 40, 512, 4<<20), op{kind: "write", off: 0, n: 1 << 20, pattern: 9}))
			path := filepath.Join(dir, "disk.qcow2")
			args := []string{"convert", "-c", "-O", "qcow2"}
			for _, o := range c.opts {
				args = append(args, "-o", o)
			}
			qemu(t, "qemu-img", append(args, src, path)...)

			img := openT(t, path, Options{Discard: true})
			requireReadsAs(t, img, src)

			ops := randomOps(3, 60, 64<<10, 4<<20)
			apply(t, img, ops)
			applyRaw(t, src, ops)
			requireReadsAs(t, img, src)
			require.NoError(t, img.Close())
			requireClean(t, path)
			requireSame(t, path, src)
		})
	}
}

func TestWriteBackingChain(t *testing.T) {
	cases := []struct {
		name    string
		baseFmt string
		opts    []string
	}{
		{"Qcow2OverQcow2", "qcow2", nil},
		{"Qcow2OverRaw", "raw", nil},
		{"V2OverQcow2", "qcow2", []string{"compat=0.10"}},
		{"ExtendedL2OverQcow2", "qcow2", []string{"extended_l2=on"}},
		{"Cluster4KOverQcow2", "qcow2", []string{"cluster_size=4k"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			base := filepath.Join(dir, "base."+c.baseFmt)
			// The base is shorter than the overlays: reads past it are zeroes.
			qemu(t, "qemu-img", "create", "-q", "-f", c.baseFmt, base, "3M")
			qemuIOWrite(t, c.baseFmt, base, randomOps(4, 30, 512, 3<<20))
			baseRef := toRaw(t, base)

			mid := createImage(t, dir, "mid.qcow2", "6M", append([]string{"backing_file=base." + c.baseFmt, "backing_fmt=" + c.baseFmt}, c.opts...)...)
			qemuIOWrite(t, "qcow2", mid, randomOps(5, 20, 512, 6<<20))
			absMid, err := filepath.Abs(mid)
			require.NoError(t, err)
			top := createImage(t, dir, "top.qcow2", "8M", append([]string{"backing_file=" + absMid, "backing_fmt=qcow2"}, c.opts...)...)
			qemuIOWrite(t, "qcow2", top, randomOps(6, 10, 512, 8<<20))
			ref := toRaw(t, top)
			midRef := toRaw(t, mid)

			img := openT(t, top, Options{Discard: true})
			requireReadsAs(t, img, ref)
			ops := randomOps(7, 120, 64<<10, 8<<20)
			if c.opts != nil && c.opts[0] == "compat=0.10" {
				// Version 2 has no zero clusters, so a trim over a
				// backing file does nothing, as in QEMU.
				kept := ops[:0]
				for _, o := range ops {
					if o.kind != "trim" {
						kept = append(kept, o)
					}
				}
				ops = kept
			}
			apply(t, img, ops)
			applyRaw(t, ref, ops)
			requireReadsAs(t, img, ref)
			require.NoError(t, img.Close())

			requireClean(t, top)
			requireSame(t, top, ref)
			requireSame(t, mid, midRef)
			requireSame(t, base, baseRef)
		})
	}
}

func TestSnapshotModeDiscardsWrites(t *testing.T) {
	dir := t.TempDir()
	path := createImage(t, dir, "disk.qcow2", "4M")
	qemuIOWrite(t, "qcow2", path, randomOps(8, 20, 512, 4<<20))
	before := toRaw(t, path)
	during := filepath.Join(dir, "during.raw")
	copyFile(t, before, during)

	img := openT(t, path, Options{Snapshot: true, Discard: true})
	ops := randomOps(9, 50, 64<<10, 4<<20)
	apply(t, img, ops)
	applyRaw(t, during, ops)
	requireReadsAs(t, img, during)
	require.NoError(t, img.Close())

	requireClean(t, path)
	requireSame(t, path, before)
}

func TestLoadSnapshot(t *testing.T) {
	dir := t.TempDir()
	path := createImage(t, dir, "disk.qcow2", "4M")
	qemuIOWrite(t, "qcow2", path, randomOps(10, 20, 512, 4<<20))
	qemu(t, "qemu-img", "snapshot", "-c", "first", path)
	snapRef := toRaw(t, path)

	// Writes through the driver copy the L2 tables and clusters the
	// snapshot shares.
	img := openT(t, path, Options{Discard: true})
	ops := randomOps(11, 60, 64<<10, 4<<20)
	apply(t, img, ops)
	require.NoError(t, img.Close())
	requireClean(t, path)
	cur := filepath.Join(dir, "cur.raw")
	copyFile(t, snapRef, cur)
	applyRaw(t, cur, ops)
	requireSame(t, path, cur)

	for _, name := range []string{"first", "1"} {
		snap := openT(t, path, Options{LoadSnapshot: name})
		require.True(t, snap.ReadOnly())
		requireReadsAs(t, snap, snapRef)
		require.NoError(t, snap.Close())
	}
	_, err := Open(path, Options{LoadSnapshot: "missing"})
	require.ErrorContains(t, err, `snapshot "missing" not found`)
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, 0o644))
}

func itoa(n int64) string {
	return fmtInt(n)
}
