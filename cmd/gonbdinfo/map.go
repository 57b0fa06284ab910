package main

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/gonbd/gonbd/nbd"
)

// doMap prints the block status map of one meta context (--map), or the
// total size per extent type (--totals).
func (i *info) doMap(ctx context.Context) (int, error) {
	mc := i.opts.mapCtx
	c, err := nbd.Dial(ctx, i.opts.uri, append(i.dialOpts, nbd.WithMetaContexts(mc))...)
	if err != nil {
		return exitError, err
	}
	defer c.Close()
	if !c.CanMetaContext(mc) {
		return exitError, fmt.Errorf("--map: server does not support metadata context %q", mc)
	}

	// A signal cancels ctx: close the connection so that a request in
	// flight fails too.
	defer context.AfterFunc(ctx, func() { c.Close() })()

	var extents []nbd.BlockExtent
	size := c.Size()
	for offset := int64(0); offset < size; {
		if ctx.Err() != nil {
			return exitError, fmt.Errorf("--map: interrupted at offset %d of %d", offset, size)
		}
		got, err := c.BlockStatus(offset, size-offset, mc)
		if ctx.Err() != nil {
			return exitError, fmt.Errorf("--map: interrupted at offset %d of %d", offset, size)
		}
		if err != nil {
			return exitError, err
		}
		if len(got) == 0 {
			return exitError, fmt.Errorf("--map: server did not return any extents at offset %d", offset)
		}
		for _, e := range got {
			// The last extent may reach past the request, or past the
			// export; keep the map inside the export.
			if e.Offset+e.Length > size {
				e.Length = size - e.Offset
			}
			extents = appendExtent(extents, e)
			offset = e.Offset + e.Length
			if offset >= size {
				break
			}
		}
	}

	if i.opts.totals {
		i.printTotals(extents, size)
	} else {
		i.printExtents(extents)
	}
	return exitOK, nil
}

// appendExtent appends e to extents, merging it into the last extent when
// both have the same type. Merging as the map grows keeps its memory to
// one entry per change of type, however many requests the server needs.
func appendExtent(extents []nbd.BlockExtent, e nbd.BlockExtent) []nbd.BlockExtent {
	if n := len(extents); n > 0 && extents[n-1].Flags == e.Flags {
		extents[n-1].Length += e.Length
		return extents
	}
	return append(extents, e)
}

func (i *info) printExtents(extents []nbd.BlockExtent) {
	if i.opts.json {
		i.out.WriteString("[\n")
	}
	for n, e := range extents {
		descr, ok := extentDescription(i.opts.mapCtx, e.Flags)
		if !i.opts.json {
			fmt.Fprintf(i.out, "%10d  %10d  %3d", e.Offset, e.Length, e.Flags)
			if ok {
				fmt.Fprintf(i.out, "  %s", descr)
			}
			i.out.WriteString("\n")
			continue
		}
		if n > 0 {
			i.out.WriteString(",\n")
		}
		fmt.Fprintf(i.out, `{ "offset": %d, "length": %d, "type": %d`, e.Offset, e.Length, e.Flags)
		if ok {
			i.out.WriteString(`, "description": `)
			writeJSONString(i.out, descr)
		}
		i.out.WriteString("}")
	}
	if i.opts.json {
		i.out.WriteString("\n]\n")
	}
}

// printTotals prints, per extent type in ascending order, the bytes of
// that type and their share of the export.
func (i *info) printTotals(extents []nbd.BlockExtent, size int64) {
	if size == 0 {
		if i.opts.json {
			i.out.WriteString("[]\n")
		}
		return
	}
	totals := map[uint32]int64{}
	for _, e := range extents {
		totals[e.Flags] += e.Length
	}
	types := make([]uint32, 0, len(totals))
	for t := range totals {
		types = append(types, t)
	}
	sort.Slice(types, func(a, b int) bool { return types[a] < types[b] })

	if i.opts.json {
		i.out.WriteString("[\n")
	}
	for n, t := range types {
		count := totals[t]
		percent := 100 * float64(count) / float64(size)
		descr, ok := extentDescription(i.opts.mapCtx, t)
		if !i.opts.json {
			fmt.Fprintf(i.out, "%10d %5.1f%% %3d", count, percent, t)
			if ok {
				fmt.Fprintf(i.out, " %s", descr)
			}
			i.out.WriteString("\n")
			continue
		}
		if n > 0 {
			i.out.WriteString(",\n")
		}
		fmt.Fprintf(i.out, `{ "size": %d, "percent": %s, "type": %d`, count, formatCG(percent), t)
		if ok {
			i.out.WriteString(`, "description": `)
			writeJSONString(i.out, descr)
		}
		i.out.WriteString(" }")
	}
	if i.opts.json {
		i.out.WriteString("\n]\n")
	}
}

// formatCG formats f like C's printf %g: six significant digits, no
// trailing zeros.
func formatCG(f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	s := strconv.FormatFloat(f, 'g', 6, 64)
	if strings.Contains(s, "e") {
		mant, exp, _ := strings.Cut(s, "e")
		if strings.Contains(mant, ".") {
			mant = strings.TrimRight(strings.TrimRight(mant, "0"), ".")
		}
		return mant + "e" + exp
	}
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// extentDescription names an extent type of the well-known meta contexts,
// with nbdinfo's words.
func extentDescription(context string, typ uint32) (string, bool) {
	switch {
	case context == "base:allocation":
		switch typ {
		case 0:
			return "data", true
		case 1:
			return "hole", true
		case 2:
			return "zero", true
		case 3:
			return "hole,zero", true
		}
	case strings.HasPrefix(context, "qemu:dirty-bitmap:"):
		switch typ {
		case 0:
			return "clean", true
		case 1:
			return "dirty", true
		}
	case context == "qemu:allocation-depth":
		switch typ {
		case 0:
			return "absent", true
		case 1:
			return "local", true
		default:
			return fmt.Sprintf("backing depth %d", typ), true
		}
	}
	return "", false
}
