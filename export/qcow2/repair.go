package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxRepairClusters bounds the in-memory refcount array of a repair (64
// MiB of counters, a 256 GiB file with 64 KiB clusters).
const maxRepairClusters = 16 << 20

// refcountCounter counts the references to each host cluster while the
// image's metadata is walked.
type refcountCounter struct {
	img    *Image
	counts []uint32
}

// add counts one reference to every cluster the host bytes [off,
// off+length) touch.
func (c *refcountCounter) add(off, length int64, what string) error {
	if length <= 0 {
		return nil
	}
	first := off >> c.img.clusterBits
	last := (off + length - 1) >> c.img.clusterBits
	if off < 0 || last >= int64(len(c.counts)) {
		return fmt.Errorf("%s at %#x lies past the end of the file", what, off)
	}
	for ci := first; ci <= last; ci++ {
		c.counts[ci]++
	}
	return nil
}

// repairRefcounts rebuilds the refcounts of a dirty image from its L1 and
// L2 tables, as QEMU does when it opens a dirty image read-write (an image
// with lazy refcounts after a crash). It walks the header, the L1, L2,
// refcount and snapshot tables, and every data cluster, then rewrites each
// refcount that differs.
func (img *Image) repairRefcounts() error {
	if img.hdr.hasBitmaps {
		return errors.New("the image has persistent bitmaps, whose clusters gonbd cannot count")
	}
	clusters := (img.fileEnd + img.clusterSize - 1) >> img.clusterBits
	if clusters > maxRepairClusters {
		return fmt.Errorf("the file has %d clusters, more than the %d gonbd repairs in memory", clusters, maxRepairClusters)
	}
	c := &refcountCounter{img: img, counts: make([]uint32, clusters)}

	if err := c.add(0, img.clusterSize, "header"); err != nil {
		return err
	}
	if err := c.add(img.rtOffset, img.rtClusters*img.clusterSize, "refcount table"); err != nil {
		return err
	}
	for _, e := range img.rt {
		if off := int64(e & offsetMask); off != 0 {
			if err := c.add(off, img.clusterSize, "refcount block"); err != nil {
				return err
			}
		}
	}
	if err := c.add(int64(img.hdr.snapshotsOffset), img.snapshotTableSize, "snapshot table"); err != nil {
		return err
	}
	if err := c.countTree(img.l1Offset, img.l1); err != nil {
		return err
	}
	for _, s := range img.snapshots {
		l1, err := img.readTable(int64(s.l1Offset), int64(s.l1Size), "snapshot L1 table")
		if err != nil {
			return err
		}
		if err := c.countTree(int64(s.l1Offset), l1); err != nil {
			return err
		}
	}
	return img.applyRefcounts(c.counts)
}

// countTree counts one L1 table, its L2 tables and their clusters.
func (c *refcountCounter) countTree(l1Offset int64, l1 []uint64) error {
	img := c.img
	if err := c.add(l1Offset, int64(len(l1))*8, "L1 table"); err != nil {
		return err
	}
	for _, e := range l1 {
		off := int64(e & offsetMask)
		if off == 0 {
			continue
		}
		if err := c.add(off, img.clusterSize, "L2 table"); err != nil {
			return err
		}
		t, err := img.l2Table(off)
		if err != nil {
			return err
		}
		for pos := int64(0); pos < img.clusterSize; pos += img.l2EntrySize {
			entry := binary.BigEndian.Uint64(t[pos:])
			if entry&entryCompressed != 0 {
				coff, n := img.compressed(entry &^ (entryCopied | entryCompressed))
				err = c.add(coff, n, "compressed cluster")
			} else if host := int64(entry & offsetMask); host != 0 {
				err = c.add(host, img.clusterSize, "data cluster")
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// applyRefcounts writes every refcount that differs from counts, and
// zeroes those of clusters past the file's end.
func (img *Image) applyRefcounts(counts []uint32) error {
	maxRef := uint64(1)<<img.refBits - 1
	if img.refBits == 64 {
		maxRef = ^uint64(0)
	}
	for ti := range int64(len(img.rt)) {
		first := ti * img.refEntries
		b, off, err := img.refBlock(ti)
		if err != nil {
			return err
		}
		if b == nil {
			for ci := first; ci < min(first+img.refEntries, int64(len(counts))); ci++ {
				if counts[ci] != 0 {
					return fmt.Errorf("cluster %#x is in use but has no refcount block", ci<<img.clusterBits)
				}
			}
			continue
		}
		changed := false
		for i := range img.refEntries {
			want := uint64(0)
			if ci := first + i; ci < int64(len(counts)) {
				want = uint64(counts[ci])
			}
			if want > maxRef {
				return fmt.Errorf("cluster %#x has %d references, more than %d-bit refcounts hold", (first+i)<<img.clusterBits, want, img.refBits)
			}
			if getRefcount(b, i, img.refBits) != want {
				putRefcount(b, i, img.refBits, want)
				changed = true
			}
		}
		if changed {
			if _, err := img.f.WriteAt(b, off); err != nil {
				return fmt.Errorf("write refcount block at %#x: %w", off, err)
			}
		}
	}
	img.freeHint = 0
	return fdatasync(img.f)
}
