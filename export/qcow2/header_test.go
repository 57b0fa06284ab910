package qcow2

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// validHeader returns the first cluster of an empty 1 MiB version 3 image
// with 64 KiB clusters.
func validHeader(t testing.TB) []byte {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "h.qcow2"))
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, writeEmptyImage(f, 1<<20, 16))
	buf := make([]byte, 64<<10)
	_, err = f.ReadAt(buf, 0)
	require.NoError(t, err)
	return buf
}

func TestParseHeaderErrors(t *testing.T) {
	be := binary.BigEndian
	cases := []struct {
		name   string
		mutate func(b []byte) []byte
		want   string
	}{
		{"TooShort", func(b []byte) []byte { return b[:40] }, "too short"},
		{"BadMagic", func(b []byte) []byte { be.PutUint32(b, 0x12345678); return b }, "not a qcow2 image"},
		{"Version4", func(b []byte) []byte { be.PutUint32(b[4:], 4); return b }, "unsupported qcow2 version 4"},
		{"ClusterBits8", func(b []byte) []byte { be.PutUint32(b[20:], 8); return b }, "invalid cluster_bits 8"},
		{"ClusterBits22", func(b []byte) []byte { be.PutUint32(b[20:], 22); return b }, "invalid cluster_bits 22"},
		{"HeaderLengthOdd", func(b []byte) []byte { be.PutUint32(b[100:], 105); return b }, "invalid header_length 105"},
		{"RefcountOrder7", func(b []byte) []byte { be.PutUint32(b[96:], 7); return b }, "invalid refcount_order 7"},
		{"HugeSize", func(b []byte) []byte { be.PutUint64(b[24:], 1<<63); return b }, "invalid virtual size"},
		{"AES", func(b []byte) []byte { be.PutUint32(b[32:], 1); return b }, "encrypted qcow2 images are not supported (crypt_method 1, AES)"},
		{"LUKS", func(b []byte) []byte { be.PutUint32(b[32:], 2); return b }, "crypt_method 2, LUKS"},
		{"HugeL1", func(b []byte) []byte { be.PutUint32(b[36:], 1<<30); return b }, "invalid l1_size"},
		{"L1TooSmall", func(b []byte) []byte { be.PutUint64(b[24:], 1<<40); return b }, "needs"},
		{"L1Unaligned", func(b []byte) []byte { be.PutUint64(b[40:], 512); return b }, "invalid l1_table_offset"},
		{"RefcountTableZero", func(b []byte) []byte { be.PutUint64(b[48:], 0); return b }, "invalid refcount_table_offset"},
		{"HugeRefcountTable", func(b []byte) []byte { be.PutUint32(b[56:], 1<<20); return b }, "invalid refcount_table_clusters"},
		{"TooManySnapshots", func(b []byte) []byte { be.PutUint32(b[60:], 1<<20); return b }, "invalid nb_snapshots"},
		{"UnknownIncompatible", func(b []byte) []byte { be.PutUint64(b[72:], 1<<20); return b }, "unsupported incompatible qcow2 features bit 20"},
		{"ExternalDataFile", func(b []byte) []byte { be.PutUint64(b[72:], incompatDataFile); return b }, "external data file"},
		{"ExtendedL2SmallClusters", func(b []byte) []byte {
			be.PutUint64(b[72:], incompatExtendedL2)
			be.PutUint32(b[20:], 12)
			be.PutUint64(b[40:], 3*4096)
			be.PutUint64(b[48:], 4096)
			return b
		}, "extended L2 entries need clusters of at least 16 KiB"},
		{"CompressionBitZlib", func(b []byte) []byte {
			be.PutUint64(b[72:], incompatCompression)
			be.PutUint32(b[100:], 112)
			return b
		}, "compression type bit is set"},
		{"UnknownCompression", func(b []byte) []byte {
			be.PutUint64(b[72:], incompatCompression)
			be.PutUint32(b[100:], 112)
			b[104] = 9
			return b
		}, "unsupported compression_type 9"},
		{"ExtensionPastEnd", func(b []byte) []byte {
			be.PutUint32(b[104:], extBackingFormat)
			be.PutUint32(b[108:], 1<<20)
			return b
		}, "runs past the header area"},
		{"CryptoExtension", func(b []byte) []byte {
			be.PutUint32(b[104:], extCrypto)
			be.PutUint32(b[108:], 16)
			return b
		}, "encrypted qcow2 images are not supported"},
		{"BackingNameTooLong", func(b []byte) []byte {
			be.PutUint64(b[8:], 512)
			be.PutUint32(b[16:], 4096)
			return b
		}, "invalid backing_file_size 4096"},
		{"BackingNamePastCluster", func(b []byte) []byte {
			be.PutUint64(b[8:], 65500)
			be.PutUint32(b[16:], 100)
			return b
		}, "invalid backing_file_offset"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseHeader(c.mutate(validHeader(t)))
			require.ErrorContains(t, err, c.want)
		})
	}
}

func TestParseHeaderFeatureNames(t *testing.T) {
	b := validHeader(t)
	be := binary.BigEndian
	be.PutUint64(b[72:], 1<<9)
	be.PutUint32(b[104:], extFeatureTable)
	be.PutUint32(b[108:], 48)
	b[112], b[113] = 0, 9
	copy(b[114:], "shiny")
	_, err := parseHeader(b)
	require.ErrorContains(t, err, "bit 9 (shiny)")
}

func TestOpenRejects(t *testing.T) {
	dir := t.TempDir()
	corrupt := createImage(t, dir, "corrupt.qcow2", "1M")
	f, err := os.OpenFile(corrupt, os.O_RDWR, 0)
	require.NoError(t, err)
	var bits [8]byte
	binary.BigEndian.PutUint64(bits[:], incompatCorrupt)
	_, err = f.WriteAt(bits[:], offIncompatible)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	_, err = Open(corrupt, Options{})
	require.ErrorContains(t, err, "marked corrupt")
	img, err := Open(corrupt, Options{ReadOnly: true})
	require.NoError(t, err, "a corrupt image opens read-only")
	_, err = img.WriteAt([]byte{1}, 0)
	require.Error(t, err)
	require.NoError(t, img.Close())

	loop := createImage(t, dir, "loop.qcow2", "1M")
	createImage(t, dir, "other.qcow2", "1M", "backing_file=loop.qcow2", "backing_fmt=qcow2")
	qemu(t, "qemu-img", "rebase", "-u", "-b", "other.qcow2", "-F", "qcow2", loop)
	_, err = Open(loop, Options{ReadOnly: true})
	require.ErrorContains(t, err, "backing chain deeper than 256")

}
