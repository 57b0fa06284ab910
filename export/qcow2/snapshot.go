package qcow2

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/gonbd/gonbd/export"
)

// snapshot is one entry of the internal snapshot table.
type snapshot struct {
	l1Offset uint64
	l1Size   uint32
	id       string
	name     string
	diskSize uint64 // 0 when the entry predates the field
}

// Limits from QEMU: extra data per entry and the whole table.
const (
	maxSnapshotExtra     = 1024
	maxSnapshotTableSize = 64 << 20
)

// readSnapshotTable parses the snapshot table named in the header.
func (img *Image) readSnapshotTable() ([]snapshot, error) {
	img.snapshotTableSize = 0
	n := int(img.hdr.nbSnapshots)
	if n == 0 {
		return nil, nil
	}
	off := int64(img.hdr.snapshotsOffset)
	if off <= 0 || off >= img.fileEnd {
		return nil, fmt.Errorf("invalid image: snapshot table at %#x lies past the end of the file", off)
	}
	r := bufio.NewReader(io.NewSectionReader(img.f, off, min(img.fileEnd-off, maxSnapshotTableSize)))
	snaps := make([]snapshot, 0, min(n, 1024))
	var fixed [40]byte
	for i := 0; i < n; i++ {
		if _, err := io.ReadFull(r, fixed[:]); err != nil {
			return nil, fmt.Errorf("invalid image: snapshot table entry %d: %w", i, err)
		}
		be := binary.BigEndian
		s := snapshot{l1Offset: be.Uint64(fixed[0:]), l1Size: be.Uint32(fixed[8:])}
		idLen, nameLen := int(be.Uint16(fixed[12:])), int(be.Uint16(fixed[14:]))
		extraLen := int(be.Uint32(fixed[36:]))
		if extraLen > maxSnapshotExtra {
			return nil, fmt.Errorf("invalid image: snapshot table entry %d has %d bytes of extra data, more than %d", i, extraLen, maxSnapshotExtra)
		}
		rest := make([]byte, extraLen+idLen+nameLen)
		if _, err := io.ReadFull(r, rest); err != nil {
			return nil, fmt.Errorf("invalid image: snapshot table entry %d: %w", i, err)
		}
		if extraLen >= 16 {
			s.diskSize = be.Uint64(rest[8:])
		}
		s.id = string(rest[extraLen : extraLen+idLen])
		s.name = string(rest[extraLen+idLen:])
		img.snapshotTableSize += int64(40+len(rest)+7) &^ 7
		if pad := (40 + len(rest)) % 8; pad != 0 {
			// QEMU does not write the padding of the last entry at the
			// end of the file. A missing padding of an earlier entry
			// fails the next entry's read.
			_, _ = r.Discard(8 - pad)
		}
		snaps = append(snaps, s)
	}
	return snaps, nil
}

// snapshotRef selects an internal snapshot, as qemu-nbd -l SNAPSHOT_PARAM
// does: by ID or name (idOrName), or by the snapshot.id and snapshot.name
// options, which must both match when both are given.
type snapshotRef struct {
	idOrName string
	id, name string
}

// parseSnapshotRef parses SNAPSHOT_PARAM. Like qemu-nbd 7.2, it reads a
// parameter that starts with "snapshot." as options and any other as an ID
// or name.
func parseSnapshotRef(param string) (snapshotRef, error) {
	if !strings.HasPrefix(param, "snapshot.") {
		return snapshotRef{idOrName: param}, nil
	}

	opts, err := export.ParseOptions(param)
	if err != nil {
		return snapshotRef{}, fmt.Errorf("invalid snapshot parameter %q: use snapshot.id=ID,snapshot.name=NAME", param)
	}
	var ref snapshotRef
	for _, key := range slices.Sorted(maps.Keys(opts)) {
		switch key {
		case "snapshot.id":
			ref.id = opts[key]
		case "snapshot.name":
			ref.name = opts[key]
		default:
			return snapshotRef{}, fmt.Errorf("invalid snapshot parameter %q: use snapshot.id or snapshot.name", key)
		}
	}
	if ref.id == "" && ref.name == "" {
		return snapshotRef{}, fmt.Errorf("invalid snapshot parameter %q: give snapshot.id=ID or snapshot.name=NAME", param)
	}
	return ref, nil
}

// find returns the snapshot ref selects, or nil. An ID or name matches an
// ID first and then a name, as QEMU does.
func (ref snapshotRef) find(snaps []snapshot) *snapshot {
	if ref.idOrName != "" {
		if s := (snapshotRef{id: ref.idOrName}).find(snaps); s != nil {
			return s
		}
		return snapshotRef{name: ref.idOrName}.find(snaps)
	}
	for i := range snaps {
		s := &snaps[i]
		if (ref.id == "" || s.id == ref.id) && (ref.name == "" || s.name == ref.name) {
			return s
		}
	}
	return nil
}

// String describes the snapshot ref for error messages.
func (ref snapshotRef) String() string {
	switch {
	case ref.idOrName != "":
		return fmt.Sprintf("snapshot %q", ref.idOrName)
	case ref.name == "":
		return fmt.Sprintf("snapshot with ID %q", ref.id)
	case ref.id == "":
		return fmt.Sprintf("snapshot with name %q", ref.name)
	}
	return fmt.Sprintf("snapshot with ID %q and name %q", ref.id, ref.name)
}

// loadSnapshot makes the snapshot that param selects (see snapshotRef) the
// disk that img serves. The image must be read-only.
func (img *Image) loadSnapshot(param string) error {
	ref, err := parseSnapshotRef(param)
	if err != nil {
		return err
	}
	s := ref.find(img.snapshots)
	if s == nil {
		return fmt.Errorf("%v not found: list them with qemu-img snapshot -l", ref)
	}
	if uint64(s.l1Size)*8 > maxL1Bytes || s.l1Offset%uint64(img.clusterSize) != 0 || s.l1Offset > offsetMask {
		return fmt.Errorf("invalid image: snapshot %q has an invalid L1 table (offset %#x, %d entries)", param, s.l1Offset, s.l1Size)
	}
	size := s.diskSize
	if size == 0 {
		size = img.hdr.size
	}
	perL1 := uint64(img.clusterSize) * uint64(img.l2Entries)
	if size > maxVirtualSize || (size+perL1-1)/perL1 > uint64(s.l1Size) {
		return fmt.Errorf("invalid image: snapshot %q has %d L1 entries for a %d-byte disk", param, s.l1Size, size)
	}
	l1, err := img.readTable(int64(s.l1Offset), int64(s.l1Size), "snapshot L1 table")
	if err != nil {
		return err
	}
	img.l1, img.l1Offset, img.size = l1, int64(s.l1Offset), int64(size)
	return nil
}

// newTempOverlay creates the overlay of snapshot mode: a qcow2 image in an
// unlinked temporary file whose backing layer is base. Like qemu-nbd -s,
// the overlay lives in $TMPDIR and disappears at close.
func newTempOverlay(base *Image, opts Options) (*Image, error) {
	f, err := os.CreateTemp("", "gonbd-snapshot-*.qcow2")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	const clusterBits = 16
	if err := writeEmptyImage(f, base.size, clusterBits); err != nil {
		f.Close()
		return nil, err
	}
	opts.Snapshot, opts.LoadSnapshot, opts.ReadOnly = false, "", false
	img, err := newImage(f, f.Name(), opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	img.backing = base
	img.tempOverlay = true
	return img, nil
}

// writeEmptyImage writes a version 3 image of size bytes with no backing
// file name: header, refcount table, one refcount block and the L1 table.
func writeEmptyImage(f *os.File, size int64, clusterBits uint) error {
	cs := int64(1) << clusterBits
	l1Entries := (size + cs*(cs/8) - 1) / (cs * (cs / 8))
	l1Clusters := max(1, (l1Entries*8+cs-1)/cs)
	used := 3 + l1Clusters // header, refcount table, refcount block, L1
	refEntries := cs * 8 / 16
	if used > refEntries {
		return fmt.Errorf("disk of %d bytes too large for a temporary overlay", size)
	}

	hdr := make([]byte, cs)
	be := binary.BigEndian
	be.PutUint32(hdr[0:], magic)
	be.PutUint32(hdr[4:], 3)
	be.PutUint32(hdr[20:], uint32(clusterBits))
	be.PutUint64(hdr[24:], uint64(size))
	be.PutUint32(hdr[36:], uint32(l1Entries))
	be.PutUint64(hdr[40:], uint64(3*cs))
	be.PutUint64(hdr[48:], uint64(cs))
	be.PutUint32(hdr[56:], 1)
	be.PutUint32(hdr[96:], 4)
	be.PutUint32(hdr[100:], headerV3MinLength)
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return err
	}

	table := make([]byte, cs)
	be.PutUint64(table, uint64(2*cs))
	if _, err := f.WriteAt(table, cs); err != nil {
		return err
	}
	block := make([]byte, cs)
	for i := int64(0); i < used; i++ {
		be.PutUint16(block[i*2:], 1)
	}
	if _, err := f.WriteAt(block, 2*cs); err != nil {
		return err
	}
	return f.Truncate((3 + l1Clusters) * cs)
}
