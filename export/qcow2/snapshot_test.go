package qcow2

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLoadSnapshotParam opens internal snapshots with every SNAPSHOT_PARAM
// form that qemu-nbd -l takes: an ID or name, or snapshot.id= and
// snapshot.name= options, which must both match when both are given.
func TestLoadSnapshotParam(t *testing.T) {
	path := createImage(t, t.TempDir(), "disk.qcow2", "1M")
	qemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 512", path)
	qemu(t, "qemu-img", "snapshot", "-c", "first", path)
	qemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x22 0 512", path)
	qemu(t, "qemu-img", "snapshot", "-c", "second", path)

	cases := []struct {
		param string
		want  byte // the first byte of the snapshot
	}{
		{"first", 0x11},
		{"2", 0x22},
		{"snapshot.name=first", 0x11},
		{"snapshot.name=second", 0x22},
		{"snapshot.id=1", 0x11},
		{"snapshot.id=2", 0x22},
		{"snapshot.id=1,snapshot.name=first", 0x11},
		{"snapshot.name=second,snapshot.id=2", 0x22},
	}
	for _, tc := range cases {
		t.Run(tc.param, func(t *testing.T) {
			img := openT(t, path, Options{LoadSnapshot: tc.param})
			defer img.Close()
			buf := make([]byte, 1)
			_, err := img.ReadAt(buf, 0)
			require.NoError(t, err)
			assert.Equal(t, tc.want, buf[0])
		})
	}
}

func TestLoadSnapshotParamErrors(t *testing.T) {
	path := createImage(t, t.TempDir(), "disk.qcow2", "1M")
	qemu(t, "qemu-img", "snapshot", "-c", "first", path)

	cases := []struct {
		name, param, msg string
	}{
		{"IDAndNameDiffer", "snapshot.id=2,snapshot.name=first", `snapshot with ID "2" and name "first" not found`},
		{"IDNotFound", "snapshot.id=7", `snapshot with ID "7" not found`},
		{"NameIsNotID", "snapshot.id=first", `snapshot with ID "first" not found`},
		{"UnknownKey", "snapshot.tag=first", `invalid snapshot parameter "snapshot.tag"`},
		{"Empty", "snapshot.id=", "snapshot.id=ID or snapshot.name=NAME"},
		{"NotKeyValue", "snapshot.id", `invalid snapshot parameter "snapshot.id"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(path, Options{LoadSnapshot: tc.param})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}
