package nbd

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
)

// optExportName enters transmission with the named export. The option has
// no error reply, so an unknown export ends the session.
func (c *serverConn) optExportName(data []byte) (optionResult, error) {
	if len(data) > maxStringLen {
		return optionResult{}, fmt.Errorf("client sent NBD_OPT_EXPORT_NAME with a %d-byte name, more than the %d-byte limit", len(data), maxStringLen)
	}
	name := string(data)
	e, ok := c.srv.exports[name]
	if !ok {
		return optionResult{}, fmt.Errorf("client requested unknown export %q with NBD_OPT_EXPORT_NAME", name)
	}
	size, err := e.Backend.Size()
	if err != nil {
		return optionResult{}, fmt.Errorf("size of export %q: %w", name, err)
	}
	c.selectExport(e)

	var b [8 + 2 + 124]byte
	binary.BigEndian.PutUint64(b[0:8], uint64(size))
	binary.BigEndian.PutUint16(b[8:10], uint16(c.flags))
	reply := b[:]
	if c.noZeroes {
		reply = b[:10]
	}
	if _, err := c.current().Write(reply); err != nil {
		return optionResult{}, fmt.Errorf("send NBD_OPT_EXPORT_NAME reply: %w", err)
	}
	return optionResult{export: name, next: nextTransmission}, nil
}

// optAbort acknowledges NBD_OPT_ABORT; the connection then closes. Any
// data sent with the option was already skipped, as the protocol requires.
func (c *serverConn) optAbort() (optionResult, error) {
	res := optionResult{reply: proto.RepAck, sent: true, next: nextClose}
	// The client may close without reading the reply, so a failed send
	// is not an error.
	_ = c.sendOptionReply(proto.OptAbort, proto.RepAck)
	return res, nil
}

// optList sends one NBD_REP_SERVER per export (name, then description as
// qemu-nbd does), then NBD_REP_ACK.
func (c *serverConn) optList(data []byte) (optionResult, error) {
	if len(data) != 0 {
		return optionResult{reply: proto.RepErrInvalid, message: "NBD_OPT_LIST takes no data"}, nil
	}
	for _, e := range c.srv.cfg.Exports {
		var nameLen [4]byte
		binary.BigEndian.PutUint32(nameLen[:], uint32(len(e.Name)))
		if err := c.sendOptionReply(proto.OptList, proto.RepServer, nameLen[:], []byte(e.Name), []byte(e.Description)); err != nil {
			return optionResult{}, err
		}
	}
	return optionResult{reply: proto.RepAck}, nil
}

// optStructuredReply turns on structured replies.
func (c *serverConn) optStructuredReply(data []byte) (optionResult, error) {
	if len(data) != 0 {
		return optionResult{reply: proto.RepErrInvalid, message: "NBD_OPT_STRUCTURED_REPLY takes no data"}, nil
	}
	if c.structured {
		return optionResult{reply: proto.RepErrInvalid, message: "structured replies are already negotiated"}, nil
	}
	c.structured = true
	return optionResult{reply: proto.RepAck}, nil
}

// infoRequest is a parsed NBD_OPT_INFO or NBD_OPT_GO.
type infoRequest struct {
	name  string
	infos []proto.Info
}

// parseInfoRequest parses the data of NBD_OPT_INFO and NBD_OPT_GO: name
// length, name, request count, requests.
func parseInfoRequest(data []byte) (infoRequest, string) {
	if len(data) < 6 {
		return infoRequest{}, fmt.Sprintf("option data of %d bytes is shorter than the 6-byte minimum", len(data))
	}
	nameLen := binary.BigEndian.Uint32(data[0:4])
	if uint64(nameLen) > uint64(len(data)-6) {
		return infoRequest{}, fmt.Sprintf("export name length %d exceeds the option data", nameLen)
	}
	if nameLen > maxStringLen {
		return infoRequest{}, fmt.Sprintf("export name of %d bytes exceeds the %d-byte limit", nameLen, maxStringLen)
	}
	req := infoRequest{name: string(data[4 : 4+nameLen])}
	rest := data[4+nameLen:]
	count := int(binary.BigEndian.Uint16(rest[0:2]))
	rest = rest[2:]
	if len(rest) != 2*count {
		return infoRequest{}, fmt.Sprintf("%d information requests need %d bytes, option has %d", count, 2*count, len(rest))
	}
	req.infos = make([]proto.Info, count)
	for i := range req.infos {
		req.infos[i] = proto.Info(binary.BigEndian.Uint16(rest[2*i:]))
	}
	return req, ""
}

// optInfoGo replies to NBD_OPT_INFO and NBD_OPT_GO: NBD_REP_INFO replies
// for the export, then NBD_REP_ACK (and, for GO, transmission).
func (c *serverConn) optInfoGo(opt proto.Option, data []byte) (optionResult, error) {
	req, problem := parseInfoRequest(data)
	if problem != "" {
		return optionResult{reply: proto.RepErrInvalid, message: problem}, nil
	}
	e, ok := c.srv.exports[req.name]
	if !ok {
		return optionResult{reply: proto.RepErrUnknown, export: req.name, message: fmt.Sprintf("export %q not found", req.name)}, nil
	}
	size, err := e.Backend.Size()
	if err != nil {
		c.log.Error("export size failed", "export", e.Name, "error", err)
		return optionResult{reply: proto.RepErrUnknown, export: req.name, message: "export size unavailable"}, nil
	}

	flags := transmissionFlags(e, c.structured)
	var info [14]byte
	binary.BigEndian.PutUint16(info[0:2], uint16(proto.InfoExport))
	binary.BigEndian.PutUint64(info[2:10], uint64(size))
	binary.BigEndian.PutUint16(info[10:12], uint16(flags))
	if err := c.sendOptionReply(opt, proto.RepInfo, info[:12]); err != nil {
		return optionResult{}, err
	}

	// Block sizes are sent whether or not the client asked, as qemu-nbd
	// does; a client that does not understand them ignores them.
	minimum, preferred, maximum := blockSizes(e.Backend)
	binary.BigEndian.PutUint16(info[0:2], uint16(proto.InfoBlockSize))
	binary.BigEndian.PutUint32(info[2:6], minimum)
	binary.BigEndian.PutUint32(info[6:10], preferred)
	binary.BigEndian.PutUint32(info[10:14], maximum)
	if err := c.sendOptionReply(opt, proto.RepInfo, info[:14]); err != nil {
		return optionResult{}, err
	}

	for _, want := range req.infos {
		var text string
		switch want {
		case proto.InfoName:
			text = e.Name
		case proto.InfoDescription:
			if e.Description == "" {
				continue
			}
			text = e.Description
		default:
			continue
		}
		binary.BigEndian.PutUint16(info[0:2], uint16(want))
		if err := c.sendOptionReply(opt, proto.RepInfo, info[:2], []byte(text)); err != nil {
			return optionResult{}, err
		}
	}

	res := optionResult{reply: proto.RepAck, export: e.Name}
	if opt == proto.OptGo {
		if err := c.sendOptionReply(opt, proto.RepAck); err != nil {
			return optionResult{}, err
		}
		res.sent = true
		c.selectExport(e)
		res.next = nextTransmission
	}
	return res, nil
}

// selectExport fixes the export and its transmission flags for the
// transmission phase. Meta contexts selected for another export name are
// dropped, as the protocol requires.
func (c *serverConn) selectExport(e *Export) {
	c.export = e
	c.flags = transmissionFlags(e, c.structured)
	if c.meta.export != e.Name {
		c.meta = metaSelection{}
	}
}

// optStartTLS acknowledges NBD_OPT_STARTTLS and upgrades the connection.
// Negotiation state from before TLS is dropped, as the protocol requires.
func (c *serverConn) optStartTLS(ctx context.Context, data []byte) (optionResult, error) {
	if c.srv.cfg.TLSMode == TLSOff {
		// qemu-nbd without --tls-creds replies the same way.
		return optionResult{reply: proto.RepErrPolicy, message: "TLS is not configured on this server"}, nil
	}
	if c.tls != nil {
		return optionResult{reply: proto.RepErrInvalid, message: "TLS is already running"}, nil
	}
	if len(data) != 0 {
		return optionResult{reply: proto.RepErrInvalid, message: "NBD_OPT_STARTTLS takes no data"}, nil
	}
	if err := c.sendOptionReply(proto.OptStartTLS, proto.RepAck); err != nil {
		return optionResult{}, err
	}

	hctx, cancel := context.WithDeadline(ctx, c.handshakeDeadline)
	defer cancel()
	tconn, err := c.srv.cfg.TLS.ServerHandshake(hctx, c.raw)
	if err != nil {
		return optionResult{}, fmt.Errorf("TLS handshake failed: %w", err)
	}
	info := tconn.TLSInfo()
	c.setConn(tconn)
	c.log.Debug("TLS established", "version", info.Version, "cipher", info.CipherSuite, "identity", info.Identity)

	if authz := c.srv.cfg.Authz; authz != nil {
		allowed, err := authz.IsAllowed(info.Identity)
		if err != nil {
			c.log.Warn("handshake failed", "reason", fmt.Sprintf("authorization check failed: %v", err), "identity", info.Identity)
			return optionResult{}, errConnDone
		}
		if !allowed {
			c.log.Warn("handshake failed", "reason", "TLS identity not authorized", "identity", info.Identity)
			return optionResult{}, errConnDone
		}
	}

	c.tls = &info
	c.structured = false
	c.meta = metaSelection{}
	return optionResult{reply: proto.RepAck, sent: true}, nil
}

// transmissionFlags returns the flags for e: exactly what its backend
// implements.
func transmissionFlags(e *Export, structured bool) proto.TransmissionFlags {
	b := e.Backend
	f := proto.FlagHasFlags | proto.FlagSendFlush

	if exportReadOnly(e) {
		f |= proto.FlagReadOnly
	} else {
		f |= proto.FlagSendFUA
		if _, ok := b.(export.Trimmer); ok {
			f |= proto.FlagSendTrim
		}
		if _, ok := b.(export.Zeroer); ok {
			f |= proto.FlagSendWriteZeroes
			if fz, ok := b.(export.FastZeroer); ok && fz.CanFastZero() {
				f |= proto.FlagSendFastZero
			}
		}
	}
	if structured {
		f |= proto.FlagSendDF
	}
	if _, ok := b.(export.Cacher); ok {
		f |= proto.FlagSendCache
	}
	if mc, ok := b.(export.MultiConner); ok && mc.CanMultiConn() {
		f |= proto.FlagCanMultiConn
	}
	if r, ok := b.(export.Rotationaler); ok && r.Rotational() {
		f |= proto.FlagRotational
	}
	return f
}

func exportReadOnly(e *Export) bool {
	if e.ReadOnly {
		return true
	}
	ro, ok := e.Backend.(export.ReadOnlyer)
	return ok && ro.ReadOnly()
}

// blockSizes returns the backend's block size constraints, or the
// protocol defaults, with the maximum capped at what the server accepts.
func blockSizes(b export.Backend) (minimum, preferred, maximum uint32) {
	minimum, preferred, maximum = proto.MinBlockSize, proto.PreferredBlockSize, proto.MaxPayloadSize
	if bs, ok := b.(export.BlockSizer); ok {
		minimum, preferred, maximum = bs.BlockSize()
	}
	if maximum == 0 || maximum > proto.MaxPayloadSize {
		maximum = proto.MaxPayloadSize
	}
	return minimum, preferred, maximum
}
