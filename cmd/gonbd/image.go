package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/gonbd/gonbd/export"

	// Export drivers register themselves in init.
	_ "github.com/gonbd/gonbd/export/file"
	_ "github.com/gonbd/gonbd/export/memory"
	_ "github.com/gonbd/gonbd/export/null"
	_ "github.com/gonbd/gonbd/export/qcow2"
)

// qcow2Magic starts every qcow2 image ("QFI\xfb").
var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// exportOptions returns the driver name and options that open the image,
// from IMAGE (or the --image-opts string) and the block-device flags.
func exportOptions(o *options) (string, export.Options, error) {
	var driver string
	var opts export.Options

	if o.imageOpts {
		var err error
		if opts, err = export.ParseOptions(o.image); err != nil {
			return "", nil, usageErrorf("--image-opts %q: %v", o.image, err)
		}
		driver = opts["driver"]
		if driver == "" {
			return "", nil, usageErrorf("--image-opts %q has no driver: add driver=file, driver=memory, ...", o.image)
		}
		delete(opts, "driver")
		// QEMU spells a raw image on a file as driver=raw,file.filename=PATH.
		if f, ok := opts["file.filename"]; ok && opts["filename"] == "" {
			opts["filename"] = f
			delete(opts, "file.filename")
			delete(opts, "file.driver")
		}
	} else {
		driver = o.format
		opts = export.Options{"filename": o.image}
		if driver == "" {
			driver = probeFormat(o.image)
			if driver == "raw" {
				// The file driver then rejects writes that would make
				// the image probe as qcow2 next time.
				opts["probed"] = "on"
			}
		}
	}

	setIfAbsent := func(key, value string) {
		if _, ok := opts[key]; !ok && value != "" {
			opts[key] = value
		}
	}
	if o.readOnly {
		opts["read-only"] = "on"
	}
	if o.offset != 0 {
		setIfAbsent("offset", strconv.FormatInt(o.offset, 10))
	}
	if o.snapshot {
		setIfAbsent("snapshot", "on")
	}
	setIfAbsent("load-snapshot", o.loadSnapshot)
	setIfAbsent("cache", o.cache)
	setIfAbsent("aio", o.aio)
	setIfAbsent("discard", o.discard)
	setIfAbsent("detect-zeroes", o.detectZeroes)
	if o.shared == 1 {
		// qemu-nbd 7.2 advertises multi-conn only when -e is not 1.
		setIfAbsent("multi-conn", "off")
	}

	if _, ok := export.Lookup(driver); !ok {
		return "", nil, usageErrorf("unknown image format %q: use one of %s", driver, strings.Join(export.Names(), ", "))
	}
	return driver, opts, nil
}

// probeFormat returns "qcow2" for an image that starts with the qcow2
// magic and "raw" otherwise, as qemu-nbd does without -f. An unreadable
// file probes as raw, so the file driver reports the open error.
func probeFormat(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "raw"
	}
	defer f.Close()

	head := make([]byte, len(qcow2Magic))
	if _, err := io.ReadFull(f, head); err != nil {
		return "raw"
	}
	if bytes.Equal(head, qcow2Magic) {
		return "qcow2"
	}
	return "raw"
}

// openExport opens the backend for the image.
func openExport(o *options) (export.Backend, string, error) {
	driver, opts, err := exportOptions(o)
	if err != nil {
		return nil, "", err
	}
	b, err := export.Open(driver, opts)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, "", usageErrorf("%v: check the IMAGE path", err)
		}
		return nil, "", usageErrorf("%v", err)
	}
	return b, driver, nil
}

// describeImage returns the image for log lines: the path, or the
// --image-opts string.
func describeImage(o *options) string {
	if o.imageOpts {
		return fmt.Sprintf("[%s]", o.image)
	}
	return o.image
}
