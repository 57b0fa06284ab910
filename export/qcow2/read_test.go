package qcow2

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestCacheReadsRange checks NBD_CMD_CACHE support: Cache succeeds over a
// range of data, holes and the backing file, and rejects a range past the
// end of the disk.
func TestCacheReadsRange(t *testing.T) {
	dir := t.TempDir()
	base := createImage(t, dir, "base.qcow2", "4M")
	qemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", base)
	top := createImage(t, dir, "top.qcow2", "4M", "backing_file="+base, "backing_fmt=qcow2")
	qemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x22 512k 1M", top)

	img := openT(t, top, Options{})
	defer img.Close()
	assert.NoError(t, img.Cache(0, 4<<20))
	assert.NoError(t, img.Cache(4<<20-1, 1))
	assert.Error(t, img.Cache(4<<20-1, 2))
}
