package qcow2

import (
	"fmt"

	"github.com/gonbd/gonbd/export"
)

// parseOptions turns the plugin's key=value options into the file name
// and Options.
func parseOptions(o export.Options) (string, Options, error) {
	var opts Options
	path := o["filename"]
	if path == "" {
		return "", opts, fmt.Errorf("qcow2: missing filename option: give the image path as filename=PATH")
	}
	for key, value := range o {
		var err error
		switch key {
		case "filename":
		case "aio":
			// gonbd has one I/O path; QEMU's AIO modes do not apply.
		case "read-only":
			opts.ReadOnly, err = parseBool(key, value)
		case "snapshot":
			opts.Snapshot, err = parseBool(key, value)
		case "multi-conn":
			var on bool
			on, err = parseBool(key, value)
			opts.NoMultiConn = !on
		case "discard":
			switch value {
			case "ignore", "off", "":
				opts.Discard = false
			case "unmap", "on":
				opts.Discard = true
			default:
				err = fmt.Errorf("qcow2: invalid discard=%q: use ignore or unmap", value)
			}
		case "cache":
			switch value {
			case "", "writeback", "writethrough", "directsync", "none", "unsafe":
				opts.Cache = value
			default:
				err = fmt.Errorf("qcow2: invalid cache=%q: use none, writeback, writethrough, directsync or unsafe", value)
			}
		case "load-snapshot":
			opts.LoadSnapshot = value
		case "detect-zeroes":
			switch value {
			case "", "off", "on", "unmap":
				opts.DetectZeroes = value
			default:
				err = fmt.Errorf("qcow2: invalid detect-zeroes=%q: use off, on or unmap", value)
			}
		case "offset":
			if value != "0" {
				err = fmt.Errorf("qcow2: offset=%s is not supported for qcow2 images: serve the whole disk", value)
			}
		default:
			err = fmt.Errorf("qcow2: unknown option %q (known: filename, read-only, discard, cache, snapshot, load-snapshot, detect-zeroes, aio, multi-conn)", key)
		}
		if err != nil {
			return "", opts, err
		}
	}
	return path, opts, nil
}

func parseBool(key, value string) (bool, error) {
	switch value {
	case "on", "true", "yes", "1", "":
		return true, nil
	case "off", "false", "no", "0":
		return false, nil
	}
	return false, fmt.Errorf("qcow2: invalid %s=%q: use on or off", key, value)
}

// writeThrough reports whether every write is flushed before it completes.
func (o Options) writeThrough() bool {
	return o.Cache == "writethrough" || o.Cache == "directsync"
}
