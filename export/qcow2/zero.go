package qcow2

import (
	"encoding/binary"

	"github.com/gonbd/gonbd/export"
)

// Zero makes [off, off+length) read as zeroes. Whole clusters become zero
// clusters (version 3) or unallocated clusters (version 2 without a
// backing file), and ZeroMayTrim frees their host clusters. Partial
// clusters, and version 2 images with a backing file, get zeroes written.
func (img *Image) Zero(off, length int64, flags export.ZeroFlags) error {
	if img.readOnly {
		return export.ErrReadOnly
	}
	if err := img.checkRange(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	start, end := img.wholeClusters(off, length)
	byMetadata := img.hdr.version >= 3 || img.backing == nil
	if flags&export.ZeroFast != 0 && (start != off || end != off+length || !byMetadata) {
		return export.ErrFastZeroUnsupported
	}

	img.mu.Lock()
	defer img.mu.Unlock()

	if err := img.zeroPartial(off, start-off); err != nil {
		return err
	}
	if err := img.zeroPartial(end, off+length-end); err != nil {
		return err
	}
	if !byMetadata {
		for o := start; o < end; o += img.clusterSize {
			if err := img.writeLocked(img.zeroCluster[:min(img.clusterSize, img.size-o)], o); err != nil {
				return err
			}
		}
		return img.syncIfWriteThrough()
	}
	if start >= end {
		return img.syncIfWriteThrough()
	}
	mayTrim := flags&export.ZeroMayTrim != 0
	err := img.rewriteEntries(start>>img.clusterBits, (end+img.clusterSize-1)>>img.clusterBits, func(e, bitmap uint64) (uint64, uint64) {
		return img.zeroEntry(e, bitmap, mayTrim)
	})
	if err != nil {
		return err
	}
	return img.syncIfWriteThrough()
}

// Trim frees the whole clusters in [off, off+length) when the image was
// opened with discard=unmap. Like QEMU, a trimmed cluster of a version 3
// image reads as zeroes afterwards, not as the backing file.
func (img *Image) Trim(off, length int64) error {
	if img.readOnly {
		return export.ErrReadOnly
	}
	if err := img.checkRange(off, length); err != nil {
		return err
	}
	// Without zero clusters (version 2) a discarded cluster would show
	// stale data of the backing file, so QEMU ignores the request.
	if !img.opts.Discard || (img.hdr.version < 3 && img.backing != nil) {
		return nil
	}
	start, end := img.wholeClusters(off, length)
	if start >= end {
		return nil
	}

	img.mu.Lock()
	defer img.mu.Unlock()

	return img.rewriteEntries(start>>img.clusterBits, (end+img.clusterSize-1)>>img.clusterBits, img.trimEntry)
}

func (img *Image) syncIfWriteThrough() error {
	if img.opts.writeThrough() {
		return fdatasync(img.f)
	}
	return nil
}

// wholeClusters returns the part of [off, off+length) made of whole
// clusters; the end of the disk counts as a cluster end.
func (img *Image) wholeClusters(off, length int64) (int64, int64) {
	mask := img.clusterSize - 1
	start := (off + mask) &^ mask
	end := (off + length) &^ mask
	if off+length == img.size {
		end = off + length
	}
	if start >= end {
		return off, off
	}
	return start, end
}

// zeroPartial writes zeroes over a range of partial clusters, skipping
// each cluster part that already reads as zeroes.
func (img *Image) zeroPartial(off, length int64) error {
	for length > 0 {
		n := min(length, img.clusterSize-off&(img.clusterSize-1))
		r, err := img.mapRun(off, n)
		if err != nil {
			return err
		}
		if r.n < n || !(r.kind == runZero || (r.kind == runUnallocated && img.backing == nil)) {
			if err := img.writeLocked(img.zeroCluster[:n], off); err != nil {
				return err
			}
		}
		off, length = off+n, length-n
	}
	return nil
}

// zeroEntry returns the L2 entry and bitmap that make a cluster read as
// zeroes, keeping a host cluster with refcount one unless mayTrim is set.
func (img *Image) zeroEntry(e, bitmap uint64, mayTrim bool) (uint64, uint64) {
	host := e & offsetMask
	keep := e&entryCompressed == 0 && e&entryCopied != 0 && host != 0 && !mayTrim
	if img.extendedL2 {
		if keep {
			return e, bitmapAllZero
		}
		return 0, bitmapAllZero
	}
	if img.hdr.version < 3 {
		return 0, 0
	}
	if keep {
		return host | entryCopied | entryZero, 0
	}
	return entryZero, 0
}

// trimEntry returns the L2 entry and bitmap of a discarded cluster.
func (img *Image) trimEntry(e, bitmap uint64) (uint64, uint64) {
	switch {
	case e == 0 && bitmap == 0 && img.backing == nil:
		return e, bitmap
	case img.extendedL2:
		return 0, bitmapAllZero
	case img.hdr.version < 3:
		return 0, 0 // no backing file: reads as zeroes
	}
	return entryZero, 0
}

// rewriteEntries replaces the L2 entries of guest clusters [first, last)
// with what next returns, one L2 table at a time: the changed entries are
// written first, then the host clusters they no longer use are freed.
func (img *Image) rewriteEntries(first, last int64, next func(e, bitmap uint64) (uint64, uint64)) error {
	for ci := first; ci < last; {
		var s l2Slot
		if err := img.lookup(ci, &s); err != nil {
			return err
		}
		n := min(last-ci, img.l2Entries-s.l2Index)
		changed := false
		for i := int64(0); i < n && !changed; i++ {
			e, bitmap := img.entryAt(s.table, s.l2Index+i)
			ne, nb := next(e, bitmap)
			changed = ne != e || nb != bitmap
		}
		if changed {
			if err := img.rewriteTable(s.l1Index, s.l2Index, n, next); err != nil {
				return err
			}
		}
		ci += n
	}
	return nil
}

func (img *Image) rewriteTable(l1i, l2i, n int64, next func(e, bitmap uint64) (uint64, uint64)) error {
	table, tableOff, err := img.writableL2(l1i)
	if err != nil {
		return err
	}
	var released []uint64
	for i := l2i; i < l2i+n; i++ {
		e, bitmap := img.entryAt(table, i)
		ne, nb := next(e, bitmap)
		pos := i * img.l2EntrySize
		binary.BigEndian.PutUint64(table[pos:], ne)
		if img.extendedL2 {
			binary.BigEndian.PutUint64(table[pos+8:], nb)
		}
		if e&entryCompressed != 0 || (e&offsetMask != 0 && e&offsetMask != ne&offsetMask) {
			released = append(released, e)
		}
	}
	if err := img.writeEntries(table, tableOff, l2i, n); err != nil {
		return err
	}
	for _, e := range released {
		if err := img.releaseEntry(e); err != nil {
			return err
		}
	}
	return nil
}

// entryAt returns L2 entry i of table, which may be nil (no table).
func (img *Image) entryAt(table []byte, i int64) (uint64, uint64) {
	if table == nil {
		return 0, 0
	}
	pos := i * img.l2EntrySize
	e := binary.BigEndian.Uint64(table[pos:])
	if img.extendedL2 {
		return e, binary.BigEndian.Uint64(table[pos+8:])
	}
	return e, 0
}
