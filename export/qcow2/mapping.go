package qcow2

import (
	"encoding/binary"
	"fmt"
)

// L2 entry bits.
const (
	entryCopied     = 1 << 63 // refcount is exactly one (active tables only)
	entryCompressed = 1 << 62
	entryZero       = 1 << 0 // standard clusters without extended L2 entries

	// Extended L2 bitmap: bits 0-31 allocated, bits 32-63 reads as zeroes.
	bitmapAllAllocated = 0x00000000ffffffff
	bitmapAllZero      = 0xffffffff00000000
)

// runKind is the storage kind of a run of guest bytes.
type runKind uint8

const (
	runUnallocated runKind = iota // read from the backing file or as zeroes
	runZero                       // reads as zeroes
	runData                       // stored at host
	runCompressed                 // one compressed cluster
)

// run is a stretch of guest bytes with one kind and, for data, contiguous
// host offsets.
type run struct {
	kind runKind
	n    int64
	// host is the host offset of the run's first byte (runData) or the
	// compressed cluster descriptor (runCompressed).
	host int64
	// copied is set for runData when every cluster has refcount one, so
	// it can be written in place.
	copied bool
}

// l2Slot locates the L2 entry of a guest cluster.
type l2Slot struct {
	l1Index   int64
	l2Index   int64
	tableOff  int64  // 0 when the L1 entry is empty
	table     []byte // nil when the L1 entry is empty
	entry     uint64
	bitmap    uint64
	guestBase int64 // guest offset of the cluster
}

// l2Table returns the L2 table at host offset off, from the cache or the
// file. The caller holds mu, shared or exclusive.
func (img *Image) l2Table(off int64) ([]byte, error) {
	if t := img.l2Cache.get(off); t != nil {
		return t, nil
	}
	if off&(img.clusterSize-1) != 0 || off < img.clusterSize || off+img.clusterSize > img.fileEnd {
		return nil, fmt.Errorf("invalid image: L2 table offset %#x is unaligned or past the end of the file (%d bytes)", off, img.fileEnd)
	}
	t := make([]byte, img.clusterSize)
	if _, err := img.f.ReadAt(t, off); err != nil {
		return nil, fmt.Errorf("read L2 table at %#x: %w", off, err)
	}
	return img.l2Cache.put(off, t), nil
}

// lookup fills s with the L2 entry of the guest cluster with index ci. It
// reuses the table already in s when ci is in the same L2 table, so s must
// be zero or filled under the same hold of mu.
func (img *Image) lookup(ci int64, s *l2Slot) error {
	l1Index := ci / img.l2Entries
	reuse := s.table != nil && s.l1Index == l1Index
	s.l1Index = l1Index
	s.l2Index = ci % img.l2Entries
	s.guestBase = ci << img.clusterBits
	s.entry, s.bitmap = 0, 0
	if !reuse {
		s.tableOff, s.table = 0, nil
		if l1Index >= int64(len(img.l1)) {
			return nil
		}
		off := int64(img.l1[l1Index] & offsetMask)
		if off == 0 {
			return nil
		}
		t, err := img.l2Table(off)
		if err != nil {
			return err
		}
		s.tableOff, s.table = off, t
	}
	pos := s.l2Index * img.l2EntrySize
	s.entry = binary.BigEndian.Uint64(s.table[pos:])
	if img.extendedL2 {
		s.bitmap = binary.BigEndian.Uint64(s.table[pos+8:])
	}
	return nil
}

// classify returns the run of the unit (cluster or subcluster) holding
// guest offset off within the cluster described by s, cut at the unit end.
func (img *Image) classify(s *l2Slot, off int64) (run, error) {
	in := off - s.guestBase
	e := s.entry
	if e&entryCompressed != 0 {
		return run{kind: runCompressed, n: img.clusterSize - in, host: int64(e &^ (entryCopied | entryCompressed))}, nil
	}
	host := int64(e & offsetMask)
	if host&(img.clusterSize-1) != 0 {
		return run{}, fmt.Errorf("invalid image: data cluster offset %#x for guest offset %d is not cluster aligned", host, s.guestBase)
	}
	copied := e&entryCopied != 0

	if !img.extendedL2 {
		n := img.clusterSize - in
		switch {
		case e&entryZero != 0:
			return run{kind: runZero, n: n}, nil
		case host != 0:
			return run{kind: runData, n: n, host: host + in, copied: copied}, nil
		}
		return run{kind: runUnallocated, n: n}, nil
	}

	sc := in / img.subSize
	n := (sc+1)*img.subSize - in
	allocated := s.bitmap>>sc&1 != 0
	zero := s.bitmap>>(32+sc)&1 != 0
	switch {
	case allocated && zero:
		return run{}, fmt.Errorf("invalid image: subcluster %d of guest offset %d is both allocated and zero", sc, s.guestBase)
	case allocated && host == 0:
		return run{}, fmt.Errorf("invalid image: subcluster %d of guest offset %d is allocated without a host cluster", sc, s.guestBase)
	case allocated:
		return run{kind: runData, n: n, host: host + in, copied: copied}, nil
	case zero:
		return run{kind: runZero, n: n}, nil
	}
	return run{kind: runUnallocated, n: n}, nil
}

// mapRun returns the run starting at guest offset off, at most length
// bytes long. Runs of data coalesce while host offsets stay contiguous;
// a compressed run never crosses its cluster. The caller holds mu.
func (img *Image) mapRun(off, length int64) (run, error) {
	var r run
	var s l2Slot
	ci := int64(-1)
	for length > 0 {
		if c := off >> img.clusterBits; c != ci {
			ci = c
			if err := img.lookup(ci, &s); err != nil {
				return run{}, err
			}
		}
		u, err := img.classify(&s, off)
		if err != nil {
			return run{}, err
		}
		u.n = min(u.n, length)
		if r.n == 0 {
			r = u
		} else if !r.extends(u) {
			break
		} else {
			r.n += u.n
		}
		if r.kind == runCompressed {
			break
		}
		off += u.n
		length -= u.n
	}
	return r, nil
}

// extends reports whether u continues r.
func (r *run) extends(u run) bool {
	if u.kind != r.kind || u.kind == runCompressed {
		return false
	}
	if u.kind == runData {
		return u.host == r.host+r.n && u.copied == r.copied
	}
	return true
}
