package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"strings"

	"github.com/gonbd/gonbd/nbd/proto"
)

// maxExportSize is the largest export size the client accepts: sizes are
// int64 in Go's io interfaces.
const maxExportSize = math.MaxInt64

// ExportInfo describes one export.
type ExportInfo struct {
	// Name is the server's canonical name (NBD_INFO_NAME) if it sent one,
	// else the name asked for.
	Name        string
	Description string
	Size        int64
	Flags       proto.TransmissionFlags
	// MinBlock, PreferredBlock and MaxBlock come from NBD_INFO_BLOCK_SIZE;
	// all three are 0 when the server sent none.
	MinBlock, PreferredBlock, MaxBlock uint32
	// MetaContexts lists the meta contexts the server offers. Only
	// ListExports fills it.
	MetaContexts []string
}

// Has reports whether the server set flag (and NBD_FLAG_HAS_FLAGS).
func (i *ExportInfo) Has(flag proto.TransmissionFlags) bool {
	return i.Flags&proto.FlagHasFlags != 0 && i.Flags&flag != 0
}

// List sends NBD_OPT_LIST and returns the exports the server names.
func (n *Negotiation) List(ctx context.Context) ([]ExportEntry, error) {
	if n.oldstyle != nil {
		// An oldstyle server has exactly one unnamed export.
		return []ExportEntry{{}}, nil
	}
	if err := n.requireOptions(proto.OptList); err != nil {
		return nil, err
	}
	defer n.watch(ctx)()

	if err := n.sendOption(proto.OptList, nil); err != nil {
		return nil, err
	}
	var out []ExportEntry
	for range maxOptionReplies {
		hdr, payload, err := n.readReply(proto.OptList)
		if err != nil {
			return nil, err
		}
		switch hdr.Reply {
		case proto.RepAck:
			return out, nil
		case proto.RepServer:
			e, err := decodeRepServer(payload)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		default:
			return nil, protocolErrorf("%s got reply %s", proto.OptList, hdr.Reply)
		}
	}
	return nil, protocolErrorf("%s sent more than %d exports", proto.OptList, maxOptionReplies)
}

func decodeRepServer(p []byte) (ExportEntry, error) {
	if len(p) < 4 {
		return ExportEntry{}, protocolErrorf("NBD_REP_SERVER is %d bytes, want at least 4", len(p))
	}
	nameLen := binary.BigEndian.Uint32(p[0:4])
	if uint64(nameLen) > uint64(len(p)-4) {
		return ExportEntry{}, protocolErrorf("NBD_REP_SERVER name length %d exceeds its %d-byte payload", nameLen, len(p))
	}
	return ExportEntry{
		Name:        string(p[4 : 4+nameLen]),
		Description: string(p[4+nameLen:]),
	}, nil
}

// Info sends NBD_OPT_INFO for the export name ("" selects the
// negotiation's default export) and returns the details the server sends.
func (n *Negotiation) Info(ctx context.Context, name string) (*ExportInfo, error) {
	if n.oldstyle != nil {
		info := *n.oldstyle
		return &info, nil
	}
	if err := n.requireOptions(proto.OptInfo); err != nil {
		return nil, err
	}
	defer n.watch(ctx)()
	return n.infoOrGo(proto.OptInfo, n.exportOrDefault(name))
}

func (n *Negotiation) exportOrDefault(name string) string {
	if name == "" {
		return n.export
	}
	return name
}

// infoRequests are the NBD_INFO_* items the client asks for. Asking for
// NBD_INFO_BLOCK_SIZE promises to honour the block size constraints,
// which Client does.
var infoRequests = []proto.Info{proto.InfoName, proto.InfoDescription, proto.InfoBlockSize}

// infoOrGo sends NBD_OPT_INFO or NBD_OPT_GO and collects NBD_REP_INFO
// replies until NBD_REP_ACK.
func (n *Negotiation) infoOrGo(opt proto.Option, name string) (*ExportInfo, error) {
	if err := checkStringLen("export name", name); err != nil {
		return nil, err
	}
	payload := appendString(nil, name)
	payload = binary.BigEndian.AppendUint16(payload, uint16(len(infoRequests)))
	for _, r := range infoRequests {
		payload = binary.BigEndian.AppendUint16(payload, uint16(r))
	}
	if err := n.sendOption(opt, payload); err != nil {
		return nil, err
	}

	info := &ExportInfo{Name: name}
	haveExport := false
	for range maxOptionReplies {
		hdr, p, err := n.readReply(opt)
		if err != nil {
			var oe *OptionError
			if errors.As(err, &oe) {
				oe.Export = name
			}
			return nil, err
		}
		switch hdr.Reply {
		case proto.RepAck:
			if !haveExport {
				return nil, protocolErrorf("%s for %q ended without NBD_INFO_EXPORT", opt, name)
			}
			return info, info.checkBlockSizes()
		case proto.RepInfo:
			isExport, err := info.decodeInfo(p)
			if err != nil {
				return nil, fmt.Errorf("%s for %q: %w", opt, name, err)
			}
			haveExport = haveExport || isExport
		default:
			return nil, protocolErrorf("%s got reply %s", opt, hdr.Reply)
		}
	}
	return nil, protocolErrorf("%s sent more than %d replies", opt, maxOptionReplies)
}

// decodeInfo decodes one NBD_REP_INFO payload into i and reports whether
// it was NBD_INFO_EXPORT. Unknown information types are ignored, as the
// protocol requires.
func (i *ExportInfo) decodeInfo(p []byte) (bool, error) {
	if len(p) < 2 {
		return false, protocolErrorf("NBD_REP_INFO is %d bytes, want at least 2", len(p))
	}
	typ := proto.Info(binary.BigEndian.Uint16(p[0:2]))
	body := p[2:]
	switch typ {
	case proto.InfoExport:
		if len(body) != 10 {
			return false, protocolErrorf("%s is %d bytes, want 12", typ, len(p))
		}
		size := binary.BigEndian.Uint64(body[0:8])
		if size > maxExportSize {
			return false, protocolErrorf("export size %d is larger than %d", size, int64(maxExportSize))
		}
		i.Size = int64(size)
		i.Flags = proto.TransmissionFlags(binary.BigEndian.Uint16(body[8:10]))
		return true, nil
	case proto.InfoName:
		i.Name = string(body)
	case proto.InfoDescription:
		i.Description = string(body)
	case proto.InfoBlockSize:
		if len(body) != 12 {
			return false, protocolErrorf("%s is %d bytes, want 14", typ, len(p))
		}
		i.MinBlock = binary.BigEndian.Uint32(body[0:4])
		i.PreferredBlock = binary.BigEndian.Uint32(body[4:8])
		i.MaxBlock = binary.BigEndian.Uint32(body[8:12])
	}
	return false, nil
}

// checkBlockSizes applies the protocol's rules on NBD_INFO_BLOCK_SIZE: the
// minimum and preferred sizes are powers of two, and the preferred and
// maximum sizes are at least the minimum.
func (i *ExportInfo) checkBlockSizes() error {
	if i.MinBlock == 0 && i.PreferredBlock == 0 && i.MaxBlock == 0 {
		return nil
	}
	switch {
	case bits.OnesCount32(i.MinBlock) != 1:
		return protocolErrorf("minimum block size %d is not a power of two", i.MinBlock)
	case bits.OnesCount32(i.PreferredBlock) != 1 || i.PreferredBlock < i.MinBlock:
		return protocolErrorf("preferred block size %d is not a power of two of at least %d", i.PreferredBlock, i.MinBlock)
	case i.MaxBlock < i.MinBlock:
		return protocolErrorf("maximum block size %d is less than the minimum %d", i.MaxBlock, i.MinBlock)
	}
	return nil
}

// ListMetaContexts sends NBD_OPT_LIST_META_CONTEXT for an export and
// returns the context names. With no queries the server lists every context.
func (n *Negotiation) ListMetaContexts(ctx context.Context, export string, queries ...string) ([]string, error) {
	if err := n.requireOptions(proto.OptListMetaContext); err != nil {
		return nil, err
	}
	defer n.watch(ctx)()
	contexts, err := n.metaContextOption(proto.OptListMetaContext, n.exportOrDefault(export), queries)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(contexts))
	for i, c := range contexts {
		names[i] = c.name
	}
	return names, nil
}

// metaContext is one NBD_REP_META_CONTEXT reply.
type metaContext struct {
	id   uint32
	name string
}

// metaContextOption sends NBD_OPT_LIST_META_CONTEXT or
// NBD_OPT_SET_META_CONTEXT and collects the replies.
func (n *Negotiation) metaContextOption(opt proto.Option, export string, queries []string) ([]metaContext, error) {
	if err := checkStringLen("export name", export); err != nil {
		return nil, err
	}
	payload := appendString(nil, export)
	payload = binary.BigEndian.AppendUint32(payload, uint32(len(queries)))
	for _, q := range queries {
		if err := checkStringLen("meta context query", q); err != nil {
			return nil, err
		}
		payload = appendString(payload, q)
	}
	if err := n.sendOption(opt, payload); err != nil {
		return nil, err
	}

	var out []metaContext
	for range maxOptionReplies {
		hdr, p, err := n.readReply(opt)
		if err != nil {
			var oe *OptionError
			if errors.As(err, &oe) {
				oe.Export = export
			}
			return nil, err
		}
		switch hdr.Reply {
		case proto.RepAck:
			return out, nil
		case proto.RepMetaContext:
			if len(p) < 5 {
				return nil, protocolErrorf("NBD_REP_META_CONTEXT is %d bytes, want at least 5", len(p))
			}
			out = append(out, metaContext{id: binary.BigEndian.Uint32(p[0:4]), name: string(p[4:])})
		default:
			return nil, protocolErrorf("%s got reply %s", opt, hdr.Reply)
		}
	}
	return nil, protocolErrorf("%s sent more than %d replies", opt, maxOptionReplies)
}

// Go enters transmission on the export name ("" selects the negotiation's
// default export), after NBD_OPT_SET_META_CONTEXT for the configured meta
// contexts. Servers without NBD_OPT_GO get NBD_OPT_EXPORT_NAME.
// The Negotiation is finished either way.
func (n *Negotiation) Go(ctx context.Context, name string) (*Client, error) {
	if n.finished {
		return nil, errors.New("nbd: negotiation already finished")
	}
	name = n.exportOrDefault(name)
	stop := n.watch(ctx)
	info, contexts, err := n.goExport(name)
	stop()
	if err != nil {
		_ = n.Abort()
		return nil, err
	}
	n.finished = true
	return newClient(n, info, contexts), nil
}

func (n *Negotiation) goExport(name string) (*ExportInfo, []metaContext, error) {
	if n.oldstyle != nil {
		info := *n.oldstyle
		return &info, nil, nil
	}
	if !n.fixed {
		info, err := n.exportName(name)
		return info, nil, err
	}

	var contexts []metaContext
	if n.structured && len(n.cfg.metaContext) > 0 {
		var err error
		contexts, err = n.metaContextOption(proto.OptSetMetaContext, name, n.cfg.metaContext)
		var oe *OptionError
		if errors.As(err, &oe) && oe.Reply != proto.RepErrTLSReqd && oe.Reply != proto.RepErrUnknown {
			n.log.Debug("meta contexts not available", "reply", oe.Reply)
			contexts, err = nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
	}

	info, err := n.infoOrGo(proto.OptGo, name)
	if errors.Is(err, ErrOptionUnsupported) {
		n.log.Debug("server lacks NBD_OPT_GO, falling back to NBD_OPT_EXPORT_NAME")
		info, err = n.exportName(name)
	}
	if err != nil {
		return nil, nil, err
	}
	return info, contexts, nil
}

// exportName sends NBD_OPT_EXPORT_NAME, the only way into transmission for
// servers without NBD_OPT_GO. The server cannot report errors to it: it
// closes the connection instead.
func (n *Negotiation) exportName(name string) (*ExportInfo, error) {
	if err := checkStringLen("export name", name); err != nil {
		return nil, err
	}
	if err := n.sendOption(proto.OptExportName, []byte(name)); err != nil {
		return nil, err
	}
	reply := make([]byte, 10, 10+124)
	if !n.noZeroes {
		reply = reply[:10+124]
	}
	if _, err := io.ReadFull(n.conn, reply); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("server closed the connection after %s %q: probably no export named %q; list the exports with gonbdinfo --list", proto.OptExportName, name, name)
		}
		return nil, fmt.Errorf("read reply to %s: %w", proto.OptExportName, err)
	}
	size := binary.BigEndian.Uint64(reply[0:8])
	if size > maxExportSize {
		return nil, protocolErrorf("export size %d is larger than %d", size, int64(maxExportSize))
	}
	return &ExportInfo{
		Name:  name,
		Size:  int64(size),
		Flags: proto.TransmissionFlags(binary.BigEndian.Uint16(reply[8:10])),
	}, nil
}

// ListExports lists every export with its details, the way qemu-nbd -L
// does: NBD_OPT_LIST, then NBD_OPT_INFO and (with structured replies)
// NBD_OPT_LIST_META_CONTEXT per export. If the server lacks NBD_OPT_INFO,
// the remaining exports carry only their name and description.
func (n *Negotiation) ListExports(ctx context.Context) ([]ExportInfo, error) {
	entries, err := n.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ExportInfo, len(entries))
	for i, e := range entries {
		out[i] = ExportInfo{Name: e.Name, Description: e.Description}
	}
	if n.oldstyle != nil {
		out[0] = *n.oldstyle
		return out, nil
	}

	for i := range out {
		info, err := n.Info(ctx, out[i].Name)
		if errors.Is(err, ErrOptionUnsupported) {
			break
		}
		if err != nil {
			return nil, err
		}
		// The NBD_OPT_LIST name and description are kept: qemu-nbd -L
		// prints those, not NBD_INFO_NAME.
		info.Name, info.Description = out[i].Name, out[i].Description
		out[i] = *info
		if n.structured {
			if out[i].MetaContexts, err = n.listAllMetaContexts(ctx, out[i].Name); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// listAllMetaContexts lists every meta context of an export. qemu 3.0
// left "qemu:" contexts out of a query-less list, so when the list has
// contexts but none in the qemu: namespace, "qemu:" is asked for
// separately, as qemu-nbd -L does. Like qemu-nbd -L, an error reply ends
// the list without failing it.
func (n *Negotiation) listAllMetaContexts(ctx context.Context, export string) ([]string, error) {
	var oe *OptionError
	names, err := n.ListMetaContexts(ctx, export)
	if errors.As(err, &oe) {
		return nil, nil
	}
	if err != nil || len(names) == 0 {
		return names, err
	}
	for _, name := range names {
		if strings.HasPrefix(name, "qemu:") {
			return names, nil
		}
	}
	more, err := n.ListMetaContexts(ctx, export, "qemu:")
	if errors.As(err, &oe) {
		return names, nil
	}
	return append(names, more...), err
}
