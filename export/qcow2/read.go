package qcow2

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// ReadAt reads len(p) bytes of the virtual disk at off.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	if err := img.checkRange(off, int64(len(p))); err != nil {
		return 0, err
	}
	img.mu.RLock()
	defer img.mu.RUnlock()

	if err := img.readLocked(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// readAt implements layer: bytes past the end of the disk read as zeroes.
func (img *Image) readAt(p []byte, off int64) error {
	if off >= img.size {
		clear(p)
		return nil
	}
	if end := img.size - off; int64(len(p)) > end {
		clear(p[end:])
		p = p[:end]
	}
	img.mu.RLock()
	defer img.mu.RUnlock()
	return img.readLocked(p, off)
}

// readLocked reads p at off, within the disk, with mu held.
func (img *Image) readLocked(p []byte, off int64) error {
	for len(p) > 0 {
		r, err := img.mapRun(off, int64(len(p)))
		if err != nil {
			return err
		}
		chunk := p[:r.n]
		switch r.kind {
		case runZero:
			clear(chunk)
		case runUnallocated:
			if img.backing == nil {
				clear(chunk)
			} else if err := img.backing.readAt(chunk, off); err != nil {
				return err
			}
		case runData:
			if err := img.readHost(chunk, r.host); err != nil {
				return err
			}
		case runCompressed:
			in := off & (img.clusterSize - 1)
			if err := img.readCompressed(chunk, uint64(r.host), in); err != nil {
				return fmt.Errorf("guest offset %d: %w", off, err)
			}
		}
		p = p[r.n:]
		off += r.n
	}
	return nil
}

// readHost reads p from the image file at host; bytes past the end of the
// file read as zeroes, as in QEMU.
func (img *Image) readHost(p []byte, host int64) error {
	n, err := img.f.ReadAt(p, host)
	if errors.Is(err, io.EOF) {
		clear(p[n:])
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s at %#x: %w", img.path, host, err)
	}
	return nil
}

// compressed returns the host offset and byte length of a compressed
// cluster descriptor.
func (img *Image) compressed(desc uint64) (int64, int64) {
	x := 62 - (img.clusterBits - 8)
	off := desc & (1<<x - 1)
	sectors := (desc>>x)&(1<<(img.clusterBits-8)-1) + 1
	return int64(off), int64(sectors*512 - off&511)
}

// clusterBufs holds cluster-sized scratch buffers for decompression and
// copy-on-write, keyed by nothing: a buffer is sized on first use.
var clusterBufs sync.Pool

func getBuf(n int64) *[]byte {
	if b, ok := clusterBufs.Get().(*[]byte); ok && int64(cap(*b)) >= n {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n)
	return &b
}

func putBuf(b *[]byte) { clusterBufs.Put(b) }

// readCompressed decompresses the cluster with descriptor desc and copies
// its bytes from in onwards into p.
func (img *Image) readCompressed(p []byte, desc uint64, in int64) error {
	off, n := img.compressed(desc)
	src := getBuf(n)
	defer putBuf(src)
	if err := img.readHost(*src, off); err != nil {
		return err
	}
	dst := getBuf(img.clusterSize)
	defer putBuf(dst)
	if err := img.decompress(*dst, *src); err != nil {
		return fmt.Errorf("compressed cluster at %#x: %w", off, err)
	}
	copy(p, (*dst)[in:])
	return nil
}

var (
	flatePool sync.Pool
	zstdPool  sync.Pool
)

// decompress fills dst (one cluster) from src. The output is bounded by
// dst, so a decompression bomb costs no more than one cluster.
func (img *Image) decompress(dst, src []byte) error {
	if img.hdr.compressionType == compressionZstd {
		return decompressZstd(dst, src)
	}
	return decompressDeflate(dst, src)
}

func decompressDeflate(dst, src []byte) error {
	r, ok := flatePool.Get().(io.ReadCloser)
	if ok {
		if err := r.(flate.Resetter).Reset(bytes.NewReader(src), nil); err != nil {
			return err
		}
	} else {
		r = flate.NewReader(bytes.NewReader(src))
	}
	defer flatePool.Put(r)
	if _, err := io.ReadFull(r, dst); err != nil {
		return fmt.Errorf("deflate data does not expand to a whole cluster: %w", err)
	}
	return nil
}

func decompressZstd(dst, src []byte) error {
	d, ok := zstdPool.Get().(*zstd.Decoder)
	if !ok {
		var err error
		// A window of at most 8 MiB bounds the decoder's memory whatever
		// the frame header claims.
		d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(8<<20), zstd.WithDecoderLowmem(true))
		if err != nil {
			return err
		}
	}
	defer zstdPool.Put(d)
	if err := d.Reset(bytes.NewReader(src)); err != nil {
		return err
	}
	if _, err := io.ReadFull(d, dst); err != nil {
		return fmt.Errorf("zstd data does not expand to a whole cluster: %w", err)
	}
	return nil
}

// maxCacheChunk bounds the buffer Cache reads through.
const maxCacheChunk = 1 << 20

// Cache prefetches a range (NBD_CMD_CACHE) by reading it: that loads its
// L2 tables into the metadata cache and its clusters, in this image or a
// backing file, into the host page cache. qemu-nbd 7.2 reads the range
// too, but with copy-on-read, which also copies backing clusters into the
// image; gonbd leaves the image unchanged.
func (img *Image) Cache(off, length int64) error {
	if err := img.checkRange(off, length); err != nil {
		return err
	}
	buf := make([]byte, min(length, maxCacheChunk))
	for length > 0 {
		n := min(length, int64(len(buf)))
		if _, err := img.ReadAt(buf[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}
