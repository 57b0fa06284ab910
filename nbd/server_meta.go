package nbd

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/gonbd/gonbd/nbd/proto"
)

// Meta context IDs sent in reply to NBD_OPT_SET_META_CONTEXT. Replies to
// NBD_OPT_LIST_META_CONTEXT carry 0, which the protocol reserves there.
const (
	metaIDBaseAllocation  uint32 = 1
	metaIDAllocationDepth uint32 = 2
)

// metaSelection is the set of meta contexts selected for one export name.
type metaSelection struct {
	export          string
	baseAllocation  bool
	allocationDepth bool
}

func (m metaSelection) any() bool { return m.baseAllocation || m.allocationDepth }

// metaRequest is a parsed NBD_OPT_LIST_META_CONTEXT or
// NBD_OPT_SET_META_CONTEXT.
type metaRequest struct {
	name    string
	queries []string
}

// parseMetaRequest parses export name length, name, query count and the
// queries, each a length and a string.
func parseMetaRequest(data []byte) (metaRequest, string) {
	name, rest, problem := takeString(data, "export name")
	if problem != "" {
		return metaRequest{}, problem
	}
	if len(rest) < 4 {
		return metaRequest{}, "option data ends before the query count"
	}
	count := binary.BigEndian.Uint32(rest[0:4])
	rest = rest[4:]
	// Every query takes at least its 4-byte length, which bounds count
	// before anything is allocated for it.
	if uint64(count)*4 > uint64(len(rest)) {
		return metaRequest{}, fmt.Sprintf("%d queries do not fit in the option data", count)
	}
	req := metaRequest{name: name, queries: make([]string, 0, count)}
	for i := uint32(0); i < count; i++ {
		var q string
		q, rest, problem = takeString(rest, "query")
		if problem != "" {
			return metaRequest{}, problem
		}
		req.queries = append(req.queries, q)
	}
	if len(rest) != 0 {
		return metaRequest{}, fmt.Sprintf("%d bytes follow the last query", len(rest))
	}
	return req, ""
}

// takeString splits a 32-bit length and that many bytes off b.
func takeString(b []byte, what string) (string, []byte, string) {
	if len(b) < 4 {
		return "", nil, fmt.Sprintf("option data ends before the %s length", what)
	}
	n := binary.BigEndian.Uint32(b[0:4])
	b = b[4:]
	if uint64(n) > uint64(len(b)) {
		return "", nil, fmt.Sprintf("%s length %d exceeds the option data", what, n)
	}
	if n > maxStringLen {
		return "", nil, fmt.Sprintf("%s of %d bytes exceeds the %d-byte limit", what, n, maxStringLen)
	}
	return string(b[:n]), b[n:], ""
}

// optMetaContext replies to NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT with one NBD_REP_META_CONTEXT per matching
// context, then NBD_REP_ACK.
func (c *serverConn) optMetaContext(opt proto.Option, data []byte) (optionResult, error) {
	set := opt == proto.OptSetMetaContext
	if set {
		// SET replaces the selection even when it fails.
		c.meta = metaSelection{}
		if !c.structured {
			return optionResult{reply: proto.RepErrInvalid, message: "negotiate structured replies before NBD_OPT_SET_META_CONTEXT"}, nil
		}
	}

	req, problem := parseMetaRequest(data)
	if problem != "" {
		return optionResult{reply: proto.RepErrInvalid, message: problem}, nil
	}
	e, ok := c.srv.exports[req.name]
	if !ok {
		return optionResult{reply: proto.RepErrUnknown, export: req.name, message: fmt.Sprintf("export %q not found", req.name)}, nil
	}

	sel := metaSelection{export: e.Name}
	if !set && len(req.queries) == 0 {
		// The protocol's "zero queries lists everything".
		sel.baseAllocation = true
		sel.allocationDepth = e.AllocationDepth
	}
	for _, q := range req.queries {
		matchMetaQuery(&sel, e, q, set)
	}

	if sel.baseAllocation {
		if err := c.sendMetaContext(opt, metaID(set, metaIDBaseAllocation), proto.ContextBaseAllocation); err != nil {
			return optionResult{}, err
		}
	}
	if sel.allocationDepth {
		if err := c.sendMetaContext(opt, metaID(set, metaIDAllocationDepth), proto.ContextAllocationDepth); err != nil {
			return optionResult{}, err
		}
	}
	if set {
		c.meta = sel
	}
	return optionResult{reply: proto.RepAck, export: e.Name}, nil
}

// matchMetaQuery adds the contexts query selects. The namespace alone
// ("base:", "qemu:") is a wildcard for LIST and selects nothing for SET,
// as the protocol specifies for base: and qemu-nbd does for qemu:. Unknown
// namespaces and leaf names are ignored, as the protocol requires.
func matchMetaQuery(sel *metaSelection, e *Export, query string, set bool) {
	switch {
	case query == "base:":
		sel.baseAllocation = sel.baseAllocation || !set
	case query == proto.ContextBaseAllocation:
		sel.baseAllocation = true
	case query == "qemu:":
		sel.allocationDepth = sel.allocationDepth || (!set && e.AllocationDepth)
	case query == proto.ContextAllocationDepth:
		sel.allocationDepth = sel.allocationDepth || e.AllocationDepth
	case strings.HasPrefix(query, "qemu:dirty-bitmap:"):
		// NOTE: gonbd exports no dirty bitmaps (qemu-nbd -B), so these
		// queries match nothing.
	}
}

func metaID(set bool, id uint32) uint32 {
	if set {
		return id
	}
	return 0
}

func (c *serverConn) sendMetaContext(opt proto.Option, id uint32, name string) error {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], id)
	return c.sendOptionReply(opt, proto.RepMetaContext, b[:], []byte(name))
}
