// Package qcow2 serves qcow2 images (versions 2 and 3) read-write: L1/L2
// mapping, refcounts of any width, zero and compressed clusters, extended
// L2 entries, backing chains, internal snapshots (read-only) and a
// temporary overlay for snapshot mode.
//
// Write ordering. Every metadata change is written through to the image
// file at once, in an order that leaves a consistent image (at worst with
// leaked clusters) wherever a SIGKILL stops the process:
//
//  1. allocate: raise the refcount of the new cluster (refcount block
//     written; a new refcount block is written before its table entry);
//  2. write the guest data (or the new L2 table) into the cluster;
//  3. point the L2 entry (or the L1 entry) at the cluster;
//  4. only then lower the refcount of a cluster the entry no longer uses.
//
// Sync is one fdatasync of the image file, which makes all of the above
// durable together.
//
// NOTE: the order is kept between write system calls, which is what
// survives a killed process. After a power loss between two flushes the
// kernel may have written the pages in another order; QEMU guards that case
// with flushes between its cache layers and gonbd does not.
package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/gonbd/gonbd/export"
)

// Image is an open qcow2 image. It implements export.Backend and the
// optional export interfaces listed in the package's init.
type Image struct {
	f        *os.File
	path     string
	hdr      *header
	readOnly bool
	opts     Options

	clusterBits uint
	clusterSize int64
	l2Entries   int64 // entries per L2 table
	l2EntrySize int64 // 8, or 16 with extended L2 entries
	extendedL2  bool
	subSize     int64 // subcluster size, the cluster size without extended L2
	size        int64 // virtual disk size

	// mu is the metadata lock: readers and in-place writers hold it
	// shared, anything that changes L1, L2 or refcounts holds it
	// exclusively.
	mu sync.RWMutex

	l1       []uint64
	l1Offset int64

	refBits     uint
	refEntries  int64 // refcount entries per refcount block
	rt          []uint64
	rtOffset    int64
	rtClusters  int64
	freeHint    int64 // no cluster below this index is free
	fileEnd     int64 // bytes used by the file, including allocations not yet written
	markedDirty bool  // gonbd set the dirty bit (lazy refcounts)

	l2Cache  *tableCache
	refCache *tableCache

	snapshots         []snapshot
	snapshotTableSize int64 // bytes, padding included
	backing           layer

	// tempOverlay marks the overlay of snapshot mode, an unlinked file
	// discarded at close.
	tempOverlay bool

	zeroCluster []byte
}

// layer is one image of a backing chain as seen from the image above it.
type layer interface {
	// readAt fills p from off; bytes past the layer's end read as zeroes.
	readAt(p []byte, off int64) error
	virtualSize() int64
	// status returns the length n of the run at off (n <= length) with one
	// allocation depth (0 unallocated, 1 this layer, 2 its backing, ...)
	// and whether it reads as zeroes.
	status(off, length int64) (n int64, depth int, zero bool, err error)
	close() error
}

// Options are the settings an image is opened with.
type Options struct {
	ReadOnly bool
	// Discard frees clusters on trim (discard=unmap); otherwise trim is a
	// no-op (discard=ignore).
	Discard bool
	// Cache is QEMU's cache mode: writeback (default), writethrough,
	// directsync, none or unsafe.
	Cache string
	// Snapshot sends writes to a temporary overlay discarded at close
	// (qemu-nbd -s).
	Snapshot bool
	// LoadSnapshot serves the internal snapshot with this ID or name,
	// read-only (qemu-nbd -l).
	LoadSnapshot string
	// DetectZeroes is off, on or unmap: writes of zeroes become zero
	// requests (unmap also frees clusters when Discard is set).
	DetectZeroes string
	// NoMultiConn makes CanMultiConn false (multi-conn=off, set by
	// gonbd -e 1).
	NoMultiConn bool
}

// maxChainDepth bounds backing chains, which also stops a chain that loops.
const maxChainDepth = 256

func init() {
	export.Register(export.Plugin{
		Name:        "qcow2",
		Description: "qcow2 image (versions 2 and 3) with backing files, read-write",
		Keys:        []string{"filename", "read-only", "discard", "cache", "snapshot", "load-snapshot", "detect-zeroes", "aio", "multi-conn"},
		Open: func(o export.Options) (export.Backend, error) {
			path, opts, err := parseOptions(o)
			if err != nil {
				return nil, err
			}
			return Open(path, opts)
		},
	})
}

// Probe reports whether header (the first bytes of a file) starts with the
// qcow2 magic.
func Probe(header []byte) bool {
	return len(header) >= 4 && binary.BigEndian.Uint32(header) == magic
}

// Open opens the qcow2 image at path.
func Open(path string, opts Options) (*Image, error) {
	if opts.LoadSnapshot != "" {
		opts.ReadOnly = true
	}
	base := opts
	if opts.Snapshot {
		base.ReadOnly = true
	}
	img, err := openImage(path, base, 0)
	if err != nil {
		return nil, err
	}
	if !opts.Snapshot {
		return img, nil
	}

	overlay, err := newTempOverlay(img, opts)
	if err != nil {
		img.close()
		return nil, fmt.Errorf("open %s: snapshot mode: %w", path, err)
	}
	return overlay, nil
}

// openImage opens one image of a chain; depth is its distance from the top.
func openImage(path string, opts Options, depth int) (*Image, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	img, err := newImage(f, path, opts)
	if err == nil && img.hdr.backingFile != "" {
		img.backing, err = openBacking(img, depth)
	}
	if err == nil && opts.LoadSnapshot != "" {
		err = img.loadSnapshot(opts.LoadSnapshot)
	}
	if err == nil && !opts.ReadOnly {
		err = img.prepareWrite()
	}
	if err != nil {
		if img != nil {
			img.close()
		} else {
			f.Close()
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return img, nil
}

// newImage reads and checks the metadata of the image in f.
func newImage(f *os.File, path string, opts Options) (*Image, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	first := make([]byte, min(st.Size(), 1<<maxClusterBits))
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, int64(len(first))), first); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	h, err := parseHeader(first)
	if err != nil {
		return nil, err
	}
	if h.incompatible&incompatCorrupt != 0 && !opts.ReadOnly {
		return nil, errors.New("the image is marked corrupt: open it read-only or repair it with qemu-img check -r all")
	}

	img := &Image{
		f:           f,
		path:        path,
		hdr:         h,
		readOnly:    opts.ReadOnly,
		opts:        opts,
		clusterBits: uint(h.clusterBits),
		clusterSize: h.clusterSize(),
		l2Entries:   h.l2Entries(),
		l2EntrySize: 8,
		extendedL2:  h.extendedL2(),
		size:        int64(h.size),
		refBits:     1 << h.refcountOrder,
		rtOffset:    int64(h.refcountTableOffset),
		rtClusters:  int64(h.refcountTableClusters),
		fileEnd:     st.Size(),
	}
	img.subSize = img.clusterSize
	if img.extendedL2 {
		img.l2EntrySize = 16
		img.subSize = img.clusterSize / 32
	}
	img.refEntries = img.clusterSize * 8 / int64(img.refBits)
	img.zeroCluster = make([]byte, img.clusterSize)

	// Up to 32 MiB of L2 tables (64 GiB of disk with 64 KiB clusters) and
	// 8 MiB of refcount blocks, but at least 16 tables of each.
	img.l2Cache = newTableCache(max(16, int((32<<20)>>img.clusterBits)))
	img.refCache = newTableCache(max(16, int((8<<20)>>img.clusterBits)))

	if img.l1, err = img.readTable(int64(h.l1TableOffset), int64(h.l1Size), "L1 table"); err != nil {
		return img, err
	}
	img.l1Offset = int64(h.l1TableOffset)
	rtEntries := img.rtClusters * img.clusterSize / 8
	if img.rt, err = img.readTable(img.rtOffset, rtEntries, "refcount table"); err != nil {
		return img, err
	}
	if img.snapshots, err = img.readSnapshotTable(); err != nil {
		return img, err
	}
	return img, nil
}

// readTable reads a table of n big-endian 64-bit entries at off.
func (img *Image) readTable(off, n int64, what string) ([]uint64, error) {
	if n == 0 {
		return nil, nil
	}
	if off <= 0 || off+n*8 > img.fileEnd {
		return nil, fmt.Errorf("invalid image: the %s at %#x (%d entries) lies past the end of the file (%d bytes)", what, off, n, img.fileEnd)
	}
	buf := make([]byte, n*8)
	if _, err := img.f.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	table := make([]uint64, n)
	for i := range table {
		table[i] = binary.BigEndian.Uint64(buf[i*8:])
	}
	return table, nil
}

// prepareWrite gets an image opened read-write ready for writes: it
// repairs the refcounts of a dirty image, as QEMU does on open, and clears
// the autoclear feature bits because gonbd does not update bitmaps.
func (img *Image) prepareWrite() error {
	if img.hdr.incompatible&incompatDirty != 0 {
		if err := img.repairRefcounts(); err != nil {
			return fmt.Errorf("image is dirty and its refcounts could not be repaired (run qemu-img check -r all): %w", err)
		}
		if err := img.setIncompatible(img.hdr.incompatible &^ incompatDirty); err != nil {
			return err
		}
	}
	if img.hdr.autoclear != 0 {
		var b [8]byte
		if _, err := img.f.WriteAt(b[:], offAutoclear); err != nil {
			return fmt.Errorf("clear autoclear features: %w", err)
		}
		img.hdr.autoclear = 0
	}
	return nil
}

// setIncompatible rewrites the incompatible feature bits (version 3 only).
func (img *Image) setIncompatible(bits uint64) error {
	if img.hdr.version < 3 {
		return nil
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], bits)
	if _, err := img.f.WriteAt(b[:], offIncompatible); err != nil {
		return fmt.Errorf("write incompatible features: %w", err)
	}
	img.hdr.incompatible = bits
	return nil
}

// markDirty sets the dirty bit before the first metadata change of an image
// with lazy refcounts, as QEMU does. gonbd still updates every refcount at
// once, so the bit only marks the image for other tools to check.
func (img *Image) markDirty() error {
	if img.markedDirty || img.hdr.compatible&compatLazyRefcounts == 0 || img.hdr.version < 3 {
		return nil
	}
	img.markedDirty = true
	return img.setIncompatible(img.hdr.incompatible | incompatDirty)
}

// Size returns the virtual disk size in bytes.
func (img *Image) Size() (int64, error) {
	return img.size, nil
}

func (img *Image) virtualSize() int64 { return img.size }

// ReadOnly reports whether writes are rejected.
func (img *Image) ReadOnly() bool { return img.readOnly }

// CanMultiConn returns true unless Options.NoMultiConn is set: all
// connections to an export share this Image, with one metadata cache and
// one allocator, so a flush on any of them covers the writes of all. (Two
// Images open on one file would not be safe, but multi-conn never
// requires that.)
func (img *Image) CanMultiConn() bool { return !img.opts.NoMultiConn }

// CanFastZero returns true: Zero with ZeroFast succeeds only for requests
// it can serve from metadata alone.
func (img *Image) CanFastZero() bool { return true }

// Sync flushes data and metadata to stable storage.
func (img *Image) Sync() error {
	if img.readOnly || img.opts.Cache == "unsafe" {
		return nil
	}
	if err := fdatasync(img.f); err != nil {
		return fmt.Errorf("sync %s: %w", img.path, err)
	}
	return nil
}

// WriteAtFUA writes p at off and flushes it before returning.
func (img *Image) WriteAtFUA(p []byte, off int64) (int, error) {
	n, err := img.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	if img.opts.Cache == "unsafe" {
		return n, nil
	}
	return n, fdatasync(img.f)
}

// Close flushes the image, clears the dirty bit gonbd set and closes the
// backing chain. In snapshot mode the temporary overlay is discarded.
func (img *Image) Close() error {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.close()
}

func (img *Image) close() error {
	var errs []error
	if !img.readOnly && !img.tempOverlay {
		errs = append(errs, fdatasync(img.f))
		if img.markedDirty {
			errs = append(errs, img.setIncompatible(img.hdr.incompatible&^incompatDirty), fdatasync(img.f))
			img.markedDirty = false
		}
	}
	errs = append(errs, img.f.Close())
	if img.backing != nil {
		errs = append(errs, img.backing.close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close %s: %w", img.path, err)
	}
	return nil
}

// checkRange rejects a request that reaches past the end of the disk.
func (img *Image) checkRange(off, length int64) error {
	if off < 0 || length < 0 || off+length > img.size || off+length < off {
		return fmt.Errorf("request at %d for %d bytes lies outside the %d-byte disk", off, length, img.size)
	}
	return nil
}

func isZero(p []byte) bool {
	for len(p) >= 4096 {
		if !bytes.Equal(p[:4096], zeroPage[:]) {
			return false
		}
		p = p[4096:]
	}
	return bytes.Equal(p, zeroPage[:len(p)])
}

var zeroPage [4096]byte
