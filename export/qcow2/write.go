package qcow2

import (
	"encoding/binary"
	"fmt"

	"github.com/gonbd/gonbd/export"
)

// WriteAt writes p at off. Writes into clusters that are allocated and
// not shared go straight to the file under the shared metadata lock.
// Any other write takes the lock exclusively to allocate.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	if img.readOnly {
		return 0, export.ErrReadOnly
	}
	if err := img.checkRange(off, int64(len(p))); err != nil {
		return 0, err
	}
	if dz := img.opts.DetectZeroes; (dz == "on" || dz == "unmap") && isZero(p) {
		var flags export.ZeroFlags
		if dz == "unmap" {
			flags = export.ZeroMayTrim
		}
		if err := img.Zero(off, int64(len(p)), flags); err != nil {
			return 0, err
		}
		return len(p), nil
	}

	img.mu.RLock()
	done, err := img.writeInPlace(p, off)
	img.mu.RUnlock()
	if err == nil && !done {
		img.mu.Lock()
		err = img.writeLocked(p, off)
		img.mu.Unlock()
	}
	if err == nil && img.opts.writeThrough() {
		err = fdatasync(img.f)
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeInPlace writes p at off if every byte maps to data in clusters with
// refcount one, and reports whether it did. The caller holds mu shared.
func (img *Image) writeInPlace(p []byte, off int64) (bool, error) {
	for pos := int64(0); pos < int64(len(p)); {
		r, err := img.mapRun(off+pos, int64(len(p))-pos)
		if err != nil {
			return false, err
		}
		if r.kind != runData || !r.copied {
			return false, nil
		}
		pos += r.n
	}
	for pos := int64(0); pos < int64(len(p)); {
		r, err := img.mapRun(off+pos, int64(len(p))-pos)
		if err != nil {
			return false, err
		}
		if err := img.writeHost(p[pos:pos+r.n], r.host); err != nil {
			return false, err
		}
		pos += r.n
	}
	return true, nil
}

func (img *Image) writeHost(p []byte, host int64) error {
	if _, err := img.f.WriteAt(p, host); err != nil {
		return fmt.Errorf("write %s at %#x: %w", img.path, host, err)
	}
	return nil
}

// writeLocked writes p at off, allocating clusters as needed. The caller
// holds mu exclusively.
func (img *Image) writeLocked(p []byte, off int64) error {
	for len(p) > 0 {
		r, err := img.mapRun(off, int64(len(p)))
		if err != nil {
			return err
		}
		if r.kind == runData && r.copied {
			if err := img.writeHost(p[:r.n], r.host); err != nil {
				return err
			}
			p, off = p[r.n:], off+r.n
			continue
		}

		in := off & (img.clusterSize - 1)
		n := min(img.clusterSize-in, int64(len(p)))
		if in == 0 && n == img.clusterSize {
			// Whole clusters: allocate a contiguous run and write it
			// from p with no copy.
			done, err := img.writeWholeClusters(p, off)
			if err != nil {
				return err
			}
			p, off = p[done:], off+done
			continue
		}
		if err := img.writeCluster(p[:n], off); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// reusableHost returns the host cluster a write to the cluster in s may
// keep (one with refcount one: preallocated zero, partly allocated or
// plain data), or 0 when the write must allocate a new one.
func (img *Image) reusableHost(s *l2Slot) int64 {
	e := s.entry
	if e&entryCompressed != 0 || e&entryCopied == 0 {
		return 0
	}
	return int64(e & offsetMask)
}

// writeWholeClusters writes the whole clusters at the start of p (off is
// cluster aligned) that need a new host cluster, up to the end of their L2
// table, and returns the bytes written.
func (img *Image) writeWholeClusters(p []byte, off int64) (int64, error) {
	ci := off >> img.clusterBits
	var s l2Slot
	if err := img.lookup(ci, &s); err != nil {
		return 0, err
	}
	if img.reusableHost(&s) != 0 {
		// In place, over a preallocated or partly allocated cluster.
		return img.clusterSize, img.writeCluster(p[:img.clusterSize], off)
	}
	count := int64(1)
	maxCount := min(int64(len(p))>>img.clusterBits, img.l2Entries-s.l2Index)
	for ; count < maxCount; count++ {
		var t l2Slot
		if err := img.lookup(ci+count, &t); err != nil {
			return 0, err
		}
		if img.reusableHost(&t) != 0 {
			break
		}
	}

	table, tableOff, err := img.writableL2(s.l1Index)
	if err != nil {
		return 0, err
	}
	host, got, err := img.allocClusters(count)
	if err != nil {
		return 0, err
	}
	length := got << img.clusterBits
	if err := img.writeHost(p[:length], host); err != nil {
		return 0, err
	}
	return length, img.setEntries(table, tableOff, s.l2Index, got, host)
}

// writeCluster writes p (within one cluster) at off: it merges p with the
// cluster's current contents and stores the whole cluster in a host
// cluster with refcount one.
func (img *Image) writeCluster(p []byte, off int64) error {
	ci := off >> img.clusterBits
	base := ci << img.clusterBits
	var s l2Slot
	if err := img.lookup(ci, &s); err != nil {
		return err
	}

	buf := getBuf(img.clusterSize)
	defer putBuf(buf)
	cluster := *buf
	if int64(len(p)) < img.clusterSize {
		valid := min(img.clusterSize, img.size-base)
		clear(cluster[valid:])
		if err := img.readLocked(cluster[:valid], base); err != nil {
			return err
		}
	}
	copy(cluster[off-base:], p)

	table, tableOff, err := img.writableL2(s.l1Index)
	if err != nil {
		return err
	}
	// The table may have been copied: read the entry again.
	if err := img.lookup(ci, &s); err != nil {
		return err
	}
	host := img.reusableHost(&s)
	if host == 0 {
		if host, _, err = img.allocClusters(1); err != nil {
			return err
		}
	}
	if err := img.writeHost(cluster, host); err != nil {
		return err
	}
	return img.setEntries(table, tableOff, s.l2Index, 1, host)
}

// setEntries points n consecutive L2 entries from index l2i at the data
// clusters from host, writes them, and then frees the clusters the old
// entries used.
func (img *Image) setEntries(table []byte, tableOff, l2i, n, host int64) error {
	old := make([]uint64, n)
	for i := range n {
		pos := (l2i + i) * img.l2EntrySize
		old[i] = binary.BigEndian.Uint64(table[pos:])
		binary.BigEndian.PutUint64(table[pos:], uint64(host+i<<img.clusterBits)|entryCopied)
		if img.extendedL2 {
			binary.BigEndian.PutUint64(table[pos+8:], bitmapAllAllocated)
		}
	}
	if err := img.writeEntries(table, tableOff, l2i, n); err != nil {
		return err
	}
	for i, e := range old {
		if int64(e&offsetMask) == host+int64(i)<<img.clusterBits && e&entryCompressed == 0 {
			continue // reused in place
		}
		if err := img.releaseEntry(e); err != nil {
			return err
		}
	}
	return nil
}

// writeEntries writes L2 entries [l2i, l2i+n) of the cached table.
func (img *Image) writeEntries(table []byte, tableOff, l2i, n int64) error {
	lo, hi := l2i*img.l2EntrySize, (l2i+n)*img.l2EntrySize
	if _, err := img.f.WriteAt(table[lo:hi], tableOff+lo); err != nil {
		return fmt.Errorf("write L2 table at %#x: %w", tableOff, err)
	}
	return nil
}

// releaseEntry lowers the refcounts of the host clusters an old L2 entry
// used, once no entry points at them any more.
func (img *Image) releaseEntry(e uint64) error {
	if e&entryCompressed != 0 {
		off, n := img.compressed(e &^ (entryCopied | entryCompressed))
		return img.freeRange(off, n, false)
	}
	host := int64(e & offsetMask)
	if host == 0 {
		return nil
	}
	return img.freeRange(host, img.clusterSize, img.opts.Discard)
}

// writableL2 returns the L2 table for L1 index l1i ready to be changed:
// allocated, and copied first when a snapshot shares it.
func (img *Image) writableL2(l1i int64) ([]byte, int64, error) {
	e := img.l1[l1i]
	off := int64(e & offsetMask)
	if off != 0 && e&entryCopied != 0 {
		t, err := img.l2Table(off)
		return t, off, err
	}
	if off != 0 {
		rc, err := img.refcount(off >> img.clusterBits)
		if err != nil {
			return nil, 0, err
		}
		if rc == 1 {
			t, err := img.l2Table(off)
			if err != nil {
				return nil, 0, err
			}
			return t, off, img.setL1(l1i, uint64(off)|entryCopied)
		}
	}

	// A new table: empty, or a copy of the shared one.
	t := make([]byte, img.clusterSize)
	if off != 0 {
		shared, err := img.l2Table(off)
		if err != nil {
			return nil, 0, err
		}
		copy(t, shared)
		if err := img.fixCopiedFlags(t); err != nil {
			return nil, 0, err
		}
	}
	newOff, _, err := img.allocClusters(1)
	if err != nil {
		return nil, 0, err
	}
	if _, err := img.f.WriteAt(t, newOff); err != nil {
		return nil, 0, fmt.Errorf("write L2 table at %#x: %w", newOff, err)
	}
	img.l2Cache.put(newOff, t)
	if err := img.setL1(l1i, uint64(newOff)|entryCopied); err != nil {
		return nil, 0, err
	}
	if off != 0 {
		if err := img.freeRange(off, img.clusterSize, false); err != nil {
			return nil, 0, err
		}
	}
	return t, newOff, nil
}

// fixCopiedFlags sets the copied flag of each data entry of an L2 table
// exactly when its cluster's refcount is one.
func (img *Image) fixCopiedFlags(t []byte) error {
	for pos := int64(0); pos < int64(len(t)); pos += img.l2EntrySize {
		e := binary.BigEndian.Uint64(t[pos:])
		host := int64(e & offsetMask)
		if e&entryCompressed != 0 || host == 0 {
			continue
		}
		rc, err := img.refcount(host >> img.clusterBits)
		if err != nil {
			return err
		}
		e &^= entryCopied
		if rc == 1 {
			e |= entryCopied
		}
		binary.BigEndian.PutUint64(t[pos:], e)
	}
	return nil
}

func (img *Image) setL1(l1i int64, v uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	if _, err := img.f.WriteAt(b[:], img.l1Offset+l1i*8); err != nil {
		return fmt.Errorf("write L1 table: %w", err)
	}
	img.l1[l1i] = v
	return nil
}
