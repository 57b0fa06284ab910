package qcow2

import (
	"encoding/binary"
	"fmt"
)

// getRefcount returns entry i of a refcount block with width bits. Entries
// narrower than a byte start at the least significant bit.
func getRefcount(block []byte, i int64, bits uint) uint64 {
	switch bits {
	case 1, 2, 4:
		bit := i * int64(bits)
		return uint64(block[bit/8]>>(bit%8)) & (1<<bits - 1)
	case 8:
		return uint64(block[i])
	case 16:
		return uint64(binary.BigEndian.Uint16(block[i*2:]))
	case 32:
		return uint64(binary.BigEndian.Uint32(block[i*4:]))
	}
	return binary.BigEndian.Uint64(block[i*8:])
}

// putRefcount sets entry i and returns the byte range it touched.
func putRefcount(block []byte, i int64, bits uint, v uint64) (int64, int64) {
	switch bits {
	case 1, 2, 4:
		bit := i * int64(bits)
		mask := byte(1<<bits-1) << (bit % 8)
		block[bit/8] = block[bit/8]&^mask | byte(v<<(bit%8))&mask
		return bit / 8, bit/8 + 1
	case 8:
		block[i] = byte(v)
		return i, i + 1
	case 16:
		binary.BigEndian.PutUint16(block[i*2:], uint16(v))
		return i * 2, i*2 + 2
	case 32:
		binary.BigEndian.PutUint32(block[i*4:], uint32(v))
		return i * 4, i*4 + 4
	}
	binary.BigEndian.PutUint64(block[i*8:], v)
	return i * 8, i*8 + 8
}

// refBlock returns the refcount block for refcount table index ti and its
// offset, or nil when none is allocated. The caller holds mu exclusively.
func (img *Image) refBlock(ti int64) ([]byte, int64, error) {
	if ti >= int64(len(img.rt)) {
		return nil, 0, nil
	}
	off := int64(img.rt[ti] & offsetMask)
	if off == 0 {
		return nil, 0, nil
	}
	if b := img.refCache.get(off); b != nil {
		return b, off, nil
	}
	if off&(img.clusterSize-1) != 0 || off+img.clusterSize > img.fileEnd {
		return nil, 0, fmt.Errorf("invalid image: refcount block offset %#x is unaligned or past the end of the file", off)
	}
	b := make([]byte, img.clusterSize)
	if _, err := img.f.ReadAt(b, off); err != nil {
		return nil, 0, fmt.Errorf("read refcount block at %#x: %w", off, err)
	}
	return img.refCache.put(off, b), off, nil
}

// refcount returns the refcount of the host cluster with index ci.
func (img *Image) refcount(ci int64) (uint64, error) {
	b, _, err := img.refBlock(ci / img.refEntries)
	if b == nil || err != nil {
		return 0, err
	}
	return getRefcount(b, ci%img.refEntries, img.refBits), nil
}

// addRefcounts adds delta to the refcounts of the n clusters from index ci,
// which must share one refcount block, and writes the changed bytes.
func (img *Image) addRefcounts(ci, n int64, delta int) error {
	ti := ci / img.refEntries
	b, off, err := img.refBlock(ti)
	if err != nil {
		return err
	}
	if b == nil {
		return fmt.Errorf("invalid image: cluster %#x has no refcount block", ci<<img.clusterBits)
	}
	maxRef := uint64(1)<<img.refBits - 1
	if img.refBits == 64 {
		maxRef = ^uint64(0)
	}
	first := ci % img.refEntries
	for i := first; i < first+n; i++ {
		v := getRefcount(b, i, img.refBits)
		if (delta < 0 && v == 0) || (delta > 0 && v == maxRef) {
			return fmt.Errorf("invalid image: refcount of cluster %#x would leave the range 0 to %d", (ti*img.refEntries+i)<<img.clusterBits, maxRef)
		}
	}
	lo, hi := int64(-1), int64(0)
	for i := first; i < first+n; i++ {
		v := getRefcount(b, i, img.refBits)
		if delta > 0 {
			v++
		} else {
			v--
		}
		s, e := putRefcount(b, i, img.refBits, v)
		if lo < 0 {
			lo = s
		}
		hi = e
	}
	if _, err := img.f.WriteAt(b[lo:hi], off+lo); err != nil {
		return fmt.Errorf("write refcount block at %#x: %w", off, err)
	}
	return nil
}

// allocClusters allocates up to n contiguous free host clusters, at least
// one, sets their refcounts to one and returns the first one's offset and
// the count.
func (img *Image) allocClusters(n int64) (int64, int64, error) {
	if err := img.markDirty(); err != nil {
		return 0, 0, err
	}
	ci := img.freeHint
	for {
		ti := ci / img.refEntries
		if ti >= int64(len(img.rt)) {
			if err := img.growRefcountTable(ti + 1); err != nil {
				return 0, 0, err
			}
			continue
		}
		if img.rt[ti]&offsetMask == 0 {
			// All clusters of the range are free: the block takes the
			// first one and so describes itself.
			if err := img.newRefBlock(ti); err != nil {
				return 0, 0, err
			}
			continue
		}
		b, _, err := img.refBlock(ti)
		if err != nil {
			return 0, 0, err
		}
		end := (ti + 1) * img.refEntries
		for ci < end && getRefcount(b, ci%img.refEntries, img.refBits) != 0 {
			ci++
		}
		if ci == end {
			continue
		}
		got := int64(1)
		for got < n && ci+got < end && getRefcount(b, (ci+got)%img.refEntries, img.refBits) == 0 {
			got++
		}
		if (ci+got)<<img.clusterBits > offsetMask {
			return 0, 0, fmt.Errorf("image full: no host cluster below %#x", int64(offsetMask))
		}
		if err := img.checkOverlap(ci, got); err != nil {
			return 0, 0, err
		}
		if err := img.addRefcounts(ci, got, 1); err != nil {
			return 0, 0, err
		}
		img.freeHint = ci + got
		img.fileEnd = max(img.fileEnd, (ci+got)<<img.clusterBits)
		return ci << img.clusterBits, got, nil
	}
}

// newRefBlock allocates the refcount block for table index ti at the
// first cluster of the range it covers. All clusters of that range are
// free because the range has no block yet.
func (img *Image) newRefBlock(ti int64) error {
	if err := img.checkOverlap(ti*img.refEntries, img.refEntries); err != nil {
		return err
	}
	off := ti * img.refEntries << img.clusterBits
	b := make([]byte, img.clusterSize)
	putRefcount(b, 0, img.refBits, 1)
	if _, err := img.f.WriteAt(b, off); err != nil {
		return fmt.Errorf("write refcount block at %#x: %w", off, err)
	}
	if err := img.setRefTableEntry(ti, uint64(off)); err != nil {
		return err
	}
	img.refCache.put(off, b)
	img.fileEnd = max(img.fileEnd, off+img.clusterSize)
	return nil
}

func (img *Image) setRefTableEntry(ti int64, v uint64) error {
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], v)
	if _, err := img.f.WriteAt(e[:], img.rtOffset+ti*8); err != nil {
		return fmt.Errorf("write refcount table: %w", err)
	}
	img.rt[ti] = v
	return nil
}

// growRefcountTable moves the refcount table to a larger one with at least
// need entries. The new table and the refcount blocks that describe it go
// at the start of the first range the old table did not cover, so they
// describe themselves. The header switches to the new table in one write;
// the old table's clusters are freed after.
func (img *Image) growRefcountTable(need int64) error {
	cs, e := img.clusterSize, img.refEntries
	old := int64(len(img.rt))
	entries := max(need, old+old/2+1)
	var tableClusters, blocks int64
	for {
		tableClusters = (entries*8 + cs - 1) / cs
		blocks = 1
		for (tableClusters+blocks+e-1)/e > blocks {
			blocks = (tableClusters + blocks + e - 1) / e
		}
		if old+blocks <= entries {
			break
		}
		entries = old + blocks
	}
	entries = tableClusters * cs / 8
	if tableClusters*cs > maxRefcountTableBytes {
		return fmt.Errorf("image full: the refcount table would exceed %d bytes", maxRefcountTableBytes)
	}

	start := old * e // first cluster of the new area
	used := tableClusters + blocks
	for j := int64(0); j < blocks; j++ {
		b := make([]byte, cs)
		for i := j * e; i < min(used, (j+1)*e); i++ {
			putRefcount(b, i-j*e, img.refBits, 1)
		}
		off := (start + tableClusters + j) * cs
		if _, err := img.f.WriteAt(b, off); err != nil {
			return fmt.Errorf("write refcount block at %#x: %w", off, err)
		}
		img.refCache.put(off, b)
	}
	rt := make([]uint64, entries)
	copy(rt, img.rt)
	for j := int64(0); j < blocks; j++ {
		rt[old+j] = uint64((start + tableClusters + j) * cs)
	}
	buf := make([]byte, tableClusters*cs)
	for i, v := range rt {
		binary.BigEndian.PutUint64(buf[i*8:], v)
	}
	tableOff := start * cs
	if _, err := img.f.WriteAt(buf, tableOff); err != nil {
		return fmt.Errorf("write refcount table at %#x: %w", tableOff, err)
	}

	var h [12]byte
	binary.BigEndian.PutUint64(h[0:], uint64(tableOff))
	binary.BigEndian.PutUint32(h[8:], uint32(tableClusters))
	if _, err := img.f.WriteAt(h[:], offRefcountTable); err != nil {
		return fmt.Errorf("write header: %w", err)
	}
	oldOff, oldClusters := img.rtOffset, img.rtClusters
	img.rt, img.rtOffset, img.rtClusters = rt, tableOff, tableClusters
	img.fileEnd = max(img.fileEnd, (start+used)*cs)
	return img.freeRange(oldOff, oldClusters*cs, false)
}

// freeRange lowers by one the refcount of every cluster that the host
// bytes [off, off+length) touch. Clusters that reach zero become free,
// and with punch set their file blocks are released.
func (img *Image) freeRange(off, length int64, punch bool) error {
	first := off >> img.clusterBits
	last := (off + length - 1) >> img.clusterBits
	for ci := first; ci <= last; {
		n := min(last+1, (ci/img.refEntries+1)*img.refEntries) - ci
		if err := img.addRefcounts(ci, n, -1); err != nil {
			return err
		}
		for c := ci; c < ci+n; c++ {
			rc, err := img.refcount(c)
			if err != nil {
				return err
			}
			if rc != 0 {
				continue
			}
			img.freeHint = min(img.freeHint, c)
			img.l2Cache.drop(c << img.clusterBits)
			if punch {
				// Punching is an optimisation: a failure leaves the
				// cluster free with its old bytes.
				_ = punchHole(img.f, c<<img.clusterBits, img.clusterSize)
			}
		}
		ci += n
	}
	return nil
}

// checkOverlap rejects an allocation of the n clusters from index ci that
// overlaps the header, the L1 table, the refcount table or the snapshot
// table: the refcounts of a damaged image can call those free, and
// writing there would destroy the image.
func (img *Image) checkOverlap(ci, n int64) error {
	cb := img.clusterBits
	areas := [][2]int64{
		{0, 1},
		{img.l1Offset >> cb, (img.l1Offset + int64(len(img.l1))*8 + img.clusterSize - 1) >> cb},
		{img.rtOffset >> cb, img.rtOffset>>cb + img.rtClusters},
		{int64(img.hdr.snapshotsOffset) >> cb, int64(img.hdr.snapshotsOffset)>>cb + int64(min(img.hdr.nbSnapshots, 1))},
	}
	for _, a := range areas {
		if ci < a[1] && a[0] < ci+n {
			return fmt.Errorf("invalid image: the refcounts mark metadata at cluster %#x free: repair the image with qemu-img check -r all", max(ci, a[0])<<cb)
		}
	}
	return nil
}
