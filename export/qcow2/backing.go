package qcow2

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// openBacking opens the backing file of img read-only, resolving a
// relative name against the directory of img. depth is img's depth.
func openBacking(img *Image, depth int) (layer, error) {
	if depth+1 >= maxChainDepth {
		return nil, fmt.Errorf("backing chain deeper than %d images: it may loop, check it with qemu-img info --backing-chain", maxChainDepth)
	}
	name := img.hdr.backingFile
	if strings.HasPrefix(name, "json:") || strings.Contains(name, "://") {
		return nil, fmt.Errorf("backing file %q is a json: or protocol name, which gonbd does not support: rebase the image onto a local file", name)
	}
	name = strings.TrimPrefix(name, "file:")
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(img.path), name)
	}

	format := img.hdr.backingFormat
	if format == "" {
		var err error
		if format, err = probeFile(path); err != nil {
			return nil, fmt.Errorf("backing file: %w", err)
		}
	}
	opts := Options{ReadOnly: true}
	switch format {
	case "qcow2":
		b, err := openImage(path, opts, depth+1)
		if err != nil {
			return nil, fmt.Errorf("backing file: %w", err)
		}
		return b, nil
	case "raw", "file":
		b, err := openRaw(path)
		if err != nil {
			return nil, fmt.Errorf("backing file: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("backing file %s has format %q: only qcow2 and raw are supported", path, format)
}

// probeFile returns "qcow2" or "raw" for the file at path.
func probeFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b [4]byte
	if _, err := io.ReadFull(f, b[:]); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("probe %s: %w", path, err)
	}
	if Probe(b[:]) {
		return "qcow2", nil
	}
	return "raw", nil
}

// rawLayer is a raw backing file.
type rawLayer struct {
	f    *os.File
	path string
	size int64
}

func openRaw(path string) (*rawLayer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &rawLayer{f: f, path: path, size: st.Size()}, nil
}

func (r *rawLayer) virtualSize() int64 { return r.size }

func (r *rawLayer) readAt(p []byte, off int64) error {
	n, err := r.f.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		clear(p[n:])
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", r.path, err)
	}
	return nil
}

// status reports a raw file as allocated everywhere (as QEMU's raw driver
// does), with holes found by SEEK_HOLE reading as zeroes.
func (r *rawLayer) status(off, length int64) (int64, int, bool, error) {
	if off >= r.size {
		return length, 1, true, nil
	}
	length = min(length, r.size-off)
	data, hole, err := seekDataHole(r.f, off)
	if err != nil {
		return length, 1, false, nil
	}
	if data > off {
		// off is in a hole that ends at data.
		return min(length, data-off), 1, true, nil
	}
	if hole <= off {
		return length, 1, false, nil
	}
	return min(length, hole-off), 1, false, nil
}

func (r *rawLayer) close() error { return r.f.Close() }
