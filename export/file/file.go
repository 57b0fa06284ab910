// Package file registers the "file" export driver (also "raw"): a raw disk
// image or block device served with positional I/O. Its options are the
// ones qemu-nbd derives from its flags: filename, offset (-o), read-only
// (-r), cache (--cache), discard (--discard), detect-zeroes
// (--detect-zeroes), and probed, which gonbd sets when it guessed the raw
// format because -f was not given.
package file

import (
	"fmt"
	"os"
	"sync"

	"github.com/gonbd/gonbd/export"
	"golang.org/x/sys/unix"
)

// keys are the file driver's own options; export.CommonKeys come on top.
var keys = []string{"filename", "offset", "snapshot", "load-snapshot", "probed"}

func init() {
	for _, name := range []string{"file", "raw"} {
		export.Register(export.Plugin{
			Name:        name,
			Description: "raw image file or block device (filename=PATH, offset=BYTES)",
			Keys:        keys,
			Open:        Open,
		})
	}
}

// Cache modes, as qemu-nbd --cache: which of O_DIRECT, O_DSYNC and flush
// each one uses.
type cacheMode struct {
	direct    bool // O_DIRECT: bypass the host page cache
	dsync     bool // every write is durable before it completes
	skipFlush bool // flush requests do nothing (unsafe)
}

var cacheModes = map[string]cacheMode{
	"writeback":    {},
	"writethrough": {dsync: true},
	"none":         {direct: true},
	"directsync":   {direct: true, dsync: true},
	"unsafe":       {skipFlush: true},
}

// Backend is an open image file or block device.
type Backend struct {
	f        *os.File
	fd       int
	path     string
	offset   int64 // file position of the export's first byte
	size     int64 // export size: file size minus offset
	readOnly bool
	cache    cacheMode
	unmap    bool // --discard=unmap: trim and write zeroes may punch holes
	detect   string
	blockDev bool

	// probed is set when gonbd guessed the raw format (no -f). headMu then
	// serializes writes to the first bytes of the file; see writeHead.
	probed bool
	headMu sync.Mutex

	multiConn bool // multi-conn option: see export.Options.MultiConn

	direct *directIO // non-nil with O_DIRECT
}

// config is the parsed form of the driver's options.
type config struct {
	path      string
	offset    int64
	readOnly  bool
	cache     cacheMode
	unmap     bool
	detect    string
	probed    bool
	multiConn bool
}

func parseOptions(opts export.Options) (config, error) {
	var c config
	if err := opts.Check("file", keys); err != nil {
		return c, err
	}

	c.path = opts["filename"]
	if c.path == "" {
		return c, fmt.Errorf("file: missing filename: give an image path")
	}
	var err error
	if c.offset, err = opts.Size("offset", 0); err != nil {
		return c, fmt.Errorf("file: %w", err)
	}
	if c.readOnly, err = opts.Bool("read-only", false); err != nil {
		return c, fmt.Errorf("file: %w", err)
	}

	mode, err := opts.Choice("cache", "writeback", "none", "writeback", "writethrough", "directsync", "unsafe")
	if err != nil {
		return c, fmt.Errorf("file: %w", err)
	}
	c.cache = cacheModes[mode]

	discard, err := opts.Choice("discard", "ignore", "ignore", "off", "unmap", "on")
	if err != nil {
		return c, fmt.Errorf("file: %w", err)
	}
	c.unmap = discard == "unmap" || discard == "on"

	if c.detect, err = opts.Choice("detect-zeroes", "off", "off", "on", "unmap"); err != nil {
		return c, fmt.Errorf("file: %w", err)
	}
	if c.detect == "unmap" && !c.unmap {
		// QEMU rejects this pair too: unmapping zeroes needs discard.
		return c, fmt.Errorf("file: detect-zeroes=unmap needs discard=unmap (--discard=unmap)")
	}

	if c.multiConn, err = opts.MultiConn(); err != nil {
		return c, fmt.Errorf("file: %w", err)
	}
	if c.probed, err = opts.Bool("probed", false); err != nil {
		return c, fmt.Errorf("file: %w", err)
	}

	if snap, _ := opts.Bool("snapshot", false); snap {
		// TODO: a temporary copy-on-write overlay, as qemu-nbd -s makes.
		// gonbd -f qcow2 on a raw file fails ("not a qcow2 image"), so the
		// hint names the overlay that -s would have made.
		return c, fmt.Errorf("file: snapshot mode (-s) is not supported for raw images: " +
			"serve a qcow2 overlay, made with qemu-img create -f qcow2 -b IMAGE -F raw OVERLAY")
	}
	if opts["load-snapshot"] != "" {
		return c, fmt.Errorf("file: raw images have no internal snapshots: -l needs -f qcow2")
	}
	return c, nil
}

// Open opens the image named by the filename option.
func Open(opts export.Options) (export.Backend, error) {
	c, err := parseOptions(opts)
	if err != nil {
		return nil, err
	}

	flags := os.O_RDWR
	if c.readOnly {
		flags = os.O_RDONLY
	}
	if c.cache.dsync {
		flags |= unix.O_DSYNC
	}
	if c.cache.direct {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(c.path, flags, 0)
	if err != nil {
		if c.cache.direct && isDirectUnsupported(err) {
			return nil, fmt.Errorf("open %s: the file system does not support O_DIRECT: use --cache=writeback", c.path)
		}
		return nil, err // *os.PathError names the operation and the path
	}

	b := &Backend{
		f:        f,
		fd:       int(f.Fd()),
		path:     c.path,
		offset:   c.offset,
		readOnly: c.readOnly,
		cache:    c.cache,
		unmap:    c.unmap,
		detect:   c.detect,
		probed:   c.probed,

		multiConn: c.multiConn,
	}
	if err := b.measure(); err != nil {
		f.Close()
		return nil, err
	}
	if c.cache.direct {
		if b.direct, err = newDirectIO(b); err != nil {
			f.Close()
			return nil, err
		}
	}
	return b, nil
}

// measure sets size from the file size or, for a block device, the
// BLKGETSIZE64 ioctl.
func (b *Backend) measure() error {
	fi, err := b.f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", b.path, err)
	}

	var total int64
	switch {
	case fi.Mode().IsRegular():
		total = fi.Size()
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		b.blockDev = true
		if total, err = blockDeviceSize(b.f); err != nil {
			return fmt.Errorf("size of block device %s: %w", b.path, err)
		}
	default:
		return fmt.Errorf("open %s: not a regular file or block device", b.path)
	}

	if b.offset > total {
		return fmt.Errorf("offset %d is past the end of %s (%d bytes): use a smaller -o", b.offset, b.path, total)
	}
	b.size = total - b.offset
	return nil
}

func (b *Backend) Size() (int64, error) { return b.size, nil }
func (b *Backend) ReadOnly() bool       { return b.readOnly }

// CanMultiConn is true unless the multi-conn option is off: every
// connection uses the same file, and the kernel keeps its page cache
// coherent between them.
func (b *Backend) CanMultiConn() bool { return b.multiConn }

// Sync flushes written data to stable storage (fdatasync), except with
// cache=unsafe.
func (b *Backend) Sync() error {
	if b.cache.skipFlush || b.readOnly {
		return nil
	}
	if err := unix.Fdatasync(b.fd); err != nil {
		return fmt.Errorf("fdatasync %s: %w", b.path, err)
	}
	return nil
}

// Close closes the file.
func (b *Backend) Close() error {
	if b.direct != nil {
		b.direct.buffered.Close()
	}
	return b.f.Close()
}
