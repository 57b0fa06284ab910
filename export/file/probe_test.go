package file

import (
	"os"
	"testing"

	"github.com/gonbd/gonbd/export"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestWriteProbedHead writes to the first bytes of an image whose format
// was probed. Writes that would make it start with the qcow2 magic fail
// with EPERM and leave the file unchanged; other writes land.
func TestWriteProbedHead(t *testing.T) {
	magic := qcow2Magic[:]
	cases := []struct {
		name    string
		cache   string
		offset  string
		writes  []headWrite
		wantErr bool   // the last write fails
		want    []byte // the file's first bytes afterwards
	}{
		{name: "WholeMagic", writes: []headWrite{{0, magic}}, wantErr: true, want: []byte{0, 0, 0, 0}},
		{name: "WholeMagicDirect", cache: "none", writes: []headWrite{{0, magic}}, wantErr: true, want: []byte{0, 0, 0, 0}},
		{name: "MagicInTwoWrites", writes: []headWrite{{0, magic[:2]}, {2, magic[2:]}}, wantErr: true, want: []byte{'Q', 'F', 0, 0}},
		{name: "LastByteCompletesMagic", writes: []headWrite{{0, magic[:3]}, {3, magic[3:]}}, wantErr: true, want: []byte{'Q', 'F', 'I', 0}},
		{name: "HeaderPage", writes: []headWrite{{0, append(append([]byte{}, magic...), 0, 0, 0, 3)}}, wantErr: true, want: []byte{0, 0, 0, 0}},
		{name: "OtherBytes", writes: []headWrite{{0, []byte("QFIX")}}, want: []byte("QFIX")},
		{name: "MagicPastHead", writes: []headWrite{{4, magic}}, want: []byte{0, 0, 0, 0, 'Q', 'F', 'I', 0xfb}},
		{name: "ExportOffset", offset: "512", writes: []headWrite{{0, magic}}, want: []byte{0, 0, 0, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := newImage(t, 1<<20)
			opts := export.Options{"filename": path, "probed": "on"}
			if tc.cache != "" {
				opts["cache"] = tc.cache
			}
			if tc.offset != "" {
				opts["offset"] = tc.offset
			}
			b := open(t, opts)

			var err error
			for _, w := range tc.writes {
				_, err = b.WriteAt(w.data, w.off)
			}
			if tc.wantErr {
				require.Error(t, err)
				assert.ErrorIs(t, err, unix.EPERM)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tc.want, readFile(t, path)[:len(tc.want)])
		})
	}
}

// TestWriteNotProbedHead checks that an image opened with an explicit
// format (no probed option) takes the qcow2 magic at offset 0.
func TestWriteNotProbedHead(t *testing.T) {
	path := newImage(t, 1<<20)
	b := open(t, export.Options{"filename": path})

	_, err := b.WriteAt(qcow2Magic[:], 0)
	require.NoError(t, err)
	assert.Equal(t, qcow2Magic[:], readFile(t, path)[:4])
}

// TestWriteProbedTinyFile writes to a probed image shorter than the magic.
func TestWriteProbedTinyFile(t *testing.T) {
	path := newImage(t, 2)
	b := open(t, export.Options{"filename": path, "probed": "on"})

	_, err := b.WriteAt([]byte("QF"), 0)
	require.NoError(t, err)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, []byte("QF"), data)
}

// headWrite is one write of a probed-head test case.
type headWrite struct {
	off  int64
	data []byte
}
