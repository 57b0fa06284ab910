package qcow2

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// QEMU's qemu-io "abort" command kills qemu-io after the writes, so an
// image with lazy refcounts is left dirty with missing refcounts.
func TestOpenRepairsDirtyImage(t *testing.T) {
	dir := t.TempDir()
	path := createImage(t, dir, "disk.qcow2", "4M", "lazy_refcounts=on")
	ops := []op{{kind: "write", off: 0, n: 1 << 20, pattern: 7}, {kind: "write", off: 3 << 20, n: 5000, pattern: 8}}
	args := []string{"-f", "qcow2"}
	for _, o := range ops {
		args = append(args, "-c", o.qemuIO())
	}
	_, code := qemuCode(t, "qemu-io", append(args, "-c", "abort", path)...)
	require.NotZero(t, code, "qemu-io abort exits with a signal")
	out, code := qemuCode(t, "qemu-img", "check", path)
	require.NotZero(t, code, "the crashed image has refcount errors:\n%s", out)

	// Read-only opens leave the image as it is.
	ro := openT(t, path, Options{ReadOnly: true})
	require.NoError(t, ro.Close())

	img := openT(t, path, Options{})
	require.Zero(t, img.hdr.incompatible&incompatDirty, "dirty bit cleared")
	apply(t, img, []op{{kind: "write", off: 2 << 20, n: 70000, pattern: 9}})
	require.NoError(t, img.Close())
	requireClean(t, path)

	ref := filepath.Join(dir, "ref.raw")
	qemu(t, "qemu-img", "create", "-q", "-f", "raw", ref, "4M")
	applyRaw(t, ref, append(ops, op{kind: "write", off: 2 << 20, n: 70000, pattern: 9}))
	requireSame(t, path, ref)
}

func TestLazyRefcountsDirtyBit(t *testing.T) {
	dir := t.TempDir()
	path := createImage(t, dir, "disk.qcow2", "4M", "lazy_refcounts=on")
	img := openT(t, path, Options{})
	apply(t, img, []op{{kind: "write", off: 0, n: 4096, pattern: 1}})
	require.NotZero(t, img.hdr.incompatible&incompatDirty, "dirty bit set by the first allocation")
	require.NoError(t, img.Close())
	h := readHeaderFile(t, path)
	require.Zero(t, h.incompatible&incompatDirty, "dirty bit cleared at close")
	requireClean(t, path)
}

func readHeaderFile(t testing.TB, path string) *header {
	t.Helper()
	img := openT(t, path, Options{ReadOnly: true})
	defer img.Close()
	return img.hdr
}
