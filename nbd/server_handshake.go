package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gonbd/gonbd/nbd/proto"
)

// Negotiation limits. A client that exceeds them is taken to be hostile
// (the protocol allows a hard disconnect for denial of service).
const (
	// maxStringLen is the protocol's limit on names, descriptions and
	// meta context queries.
	maxStringLen = proto.MaxStringLen
	// maxOptionPayload bounds the option data the server reads into
	// memory. The largest valid request, NBD_OPT_SET_META_CONTEXT with a
	// handful of 4096-byte queries, fits comfortably.
	maxOptionPayload = 64 << 10
	// maxOptions is how many options one connection may send before it is
	// dropped; nbdkit and qemu-nbd clients send fewer than 20.
	maxOptions = 256
	// discardChunk is the buffer used to skip oversized option data.
	discardChunk = 16 << 10
)

// optionResult is an option handler's decision: the final reply and
// what follows it.
type optionResult struct {
	reply   proto.Reply // final reply, 0 for EXPORT_NAME (which has none)
	message string      // text sent with an error reply
	export  string      // export named by the option, for the log
	sent    bool        // the handler already sent the final reply
	next    optionNext
}

type optionNext int

const (
	nextOption       optionNext = iota // read the next option
	nextTransmission                   // handshake done, serve c.export
	nextClose                          // the client aborted
)

// handshake runs fixed newstyle negotiation until the client picks an
// export. It reads the socket with exact-length reads and no buffering,
// so that nothing a client sends after NBD_OPT_STARTTLS is read before
// the TLS handshake (nbdkit's CVE-2021-3716 was such a buffer).
func (c *serverConn) handshake(ctx context.Context) error {
	c.handshakeDeadline = time.Now().Add(c.srv.cfg.HandshakeLimit)
	if err := c.raw.SetDeadline(c.handshakeDeadline); err != nil {
		return fmt.Errorf("set handshake deadline: %w", err)
	}
	if c.isShuttingDown() {
		return errConnDone
	}

	if err := c.sendGreeting(); err != nil {
		return err
	}
	if err := c.readClientFlags(); err != nil {
		return err
	}

	for {
		res, opt, err := c.negotiateOption(ctx)
		if err != nil {
			return err
		}
		if res.next == nextClose {
			return errConnDone
		}
		if res.next == nextTransmission {
			c.log.Debug("entering transmission", "option", opt, "export", c.export.Name)
			return c.enterTransmission()
		}
	}
}

// sendGreeting sends NBDMAGIC, IHAVEOPT and the handshake flags.
func (c *serverConn) sendGreeting() error {
	var b [18]byte
	binary.BigEndian.PutUint64(b[0:8], proto.NBDMagic)
	binary.BigEndian.PutUint64(b[8:16], proto.IHaveOpt)
	binary.BigEndian.PutUint16(b[16:18], proto.FlagFixedNewstyle|proto.FlagNoZeroes)
	if _, err := c.raw.Write(b[:]); err != nil {
		return fmt.Errorf("send greeting: %w", err)
	}
	return nil
}

// readClientFlags reads the client flags. The protocol requires closing
// the connection on a flag the server does not know.
func (c *serverConn) readClientFlags() error {
	var b [4]byte
	if _, err := io.ReadFull(c.raw, b[:]); err != nil {
		return fmt.Errorf("read client flags: %w", err)
	}
	flags := binary.BigEndian.Uint32(b[:])
	if unknown := flags &^ proto.KnownClientFlags; unknown != 0 {
		return fmt.Errorf("client sent unknown client flags %#x", unknown)
	}
	if flags&proto.ClientFlagFixedNewstyle == 0 {
		// Without fixed newstyle a client may only send EXPORT_NAME.
		// gonbd still replies to other options, which such a client
		// does not send.
		c.log.Debug("client did not set NBD_FLAG_C_FIXED_NEWSTYLE")
	}
	c.noZeroes = flags&proto.ClientFlagNoZeroes != 0
	return nil
}

// negotiateOption reads one option, runs its handler and sends the final
// reply. An error return ends the connection.
func (c *serverConn) negotiateOption(ctx context.Context) (optionResult, proto.Option, error) {
	conn := c.current()
	var hb [proto.OptionHeaderSize]byte
	if _, err := io.ReadFull(conn, hb[:]); err != nil {
		return optionResult{}, 0, fmt.Errorf("read option header: %w", err)
	}
	hdr, err := proto.DecodeOptionHeader(hb[:])
	if err != nil {
		return optionResult{}, 0, err
	}

	c.optionCount++
	if c.optionCount > maxOptions {
		return optionResult{}, hdr.Option, fmt.Errorf("client sent more than %d options", maxOptions)
	}

	res, err := c.dispatchOption(ctx, hdr)
	if err != nil {
		return res, hdr.Option, err
	}

	logArgs := []any{"option", hdr.Option}
	if res.reply != 0 {
		logArgs = append(logArgs, "reply", res.reply)
	}
	if res.export != "" || hdr.Option == proto.OptGo || hdr.Option == proto.OptInfo || hdr.Option == proto.OptExportName {
		logArgs = append(logArgs, "export", res.export)
	}
	if res.message != "" {
		logArgs = append(logArgs, "reason", res.message)
	}
	c.log.Debug("option", logArgs...)

	if res.reply != 0 && !res.sent {
		if err := c.sendOptionReply(hdr.Option, res.reply, []byte(res.message)); err != nil {
			return res, hdr.Option, err
		}
	}
	return res, hdr.Option, nil
}

// dispatchOption applies the TLS policy and the payload limit, reads the
// option data and calls the option's handler.
func (c *serverConn) dispatchOption(ctx context.Context, hdr proto.OptionHeader) (optionResult, error) {
	if c.isShuttingDown() {
		return c.rejectDuringShutdown(hdr)
	}

	if c.tlsRequired() && hdr.Option != proto.OptStartTLS && hdr.Option != proto.OptAbort {
		if hdr.Option == proto.OptExportName {
			// EXPORT_NAME has no error reply, so the protocol requires
			// ending the session.
			return optionResult{}, errors.New("client sent NBD_OPT_EXPORT_NAME before starting TLS, which is required")
		}
		if err := c.discard(hdr.Length); err != nil {
			return optionResult{}, err
		}
		return optionResult{reply: proto.RepErrTLSReqd, message: "TLS is required: send NBD_OPT_STARTTLS first"}, nil
	}

	if hdr.Length > maxOptionPayload {
		if hdr.Option == proto.OptExportName {
			return optionResult{}, fmt.Errorf("client sent NBD_OPT_EXPORT_NAME with a %d-byte name, more than the %d-byte limit", hdr.Length, maxStringLen)
		}
		if err := c.discard(hdr.Length); err != nil {
			return optionResult{}, err
		}
		return optionResult{reply: proto.RepErrTooBig, message: fmt.Sprintf("option data of %d bytes exceeds the server's limit of %d", hdr.Length, maxOptionPayload)}, nil
	}

	data := make([]byte, hdr.Length)
	if _, err := io.ReadFull(c.current(), data); err != nil {
		return optionResult{}, fmt.Errorf("read %s data: %w", hdr.Option, err)
	}

	switch hdr.Option {
	case proto.OptExportName:
		return c.optExportName(data)
	case proto.OptAbort:
		return c.optAbort()
	case proto.OptList:
		return c.optList(data)
	case proto.OptStartTLS:
		return c.optStartTLS(ctx, data)
	case proto.OptInfo, proto.OptGo:
		return c.optInfoGo(hdr.Option, data)
	case proto.OptStructuredReply:
		return c.optStructuredReply(data)
	case proto.OptListMetaContext, proto.OptSetMetaContext:
		return c.optMetaContext(hdr.Option, data)
	}
	return optionResult{reply: proto.RepErrUnsup, message: fmt.Sprintf("option %s is not supported", hdr.Option)}, nil
}

// tlsRequired reports whether options other than STARTTLS and ABORT must
// be refused because TLS is required and not yet running.
func (c *serverConn) tlsRequired() bool {
	return c.srv.cfg.TLSMode == TLSRequire && c.tls == nil
}

// discard skips n bytes of option data in bounded chunks, so a huge
// announced length never becomes a huge allocation.
func (c *serverConn) discard(n uint32) error {
	if n == 0 {
		return nil
	}
	buf := make([]byte, min(int(n), discardChunk))
	copied, err := io.CopyBuffer(io.Discard, io.LimitReader(c.current(), int64(n)), buf)
	if err == nil && copied < int64(n) {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("skip %d bytes of option data: %w", n, err)
	}
	return nil
}

// sendOptionReply sends one option reply with payload.
func (c *serverConn) sendOptionReply(opt proto.Option, rep proto.Reply, payload ...[]byte) error {
	size := 0
	for _, p := range payload {
		size += len(p)
	}
	b := make([]byte, proto.OptionReplyHeaderSize, proto.OptionReplyHeaderSize+size)
	proto.OptionReplyHeader{Option: opt, Reply: rep, Length: uint32(size)}.Encode(b)
	for _, p := range payload {
		b = append(b, p...)
	}
	if _, err := c.current().Write(b); err != nil {
		return fmt.Errorf("send %s reply to %s: %w", rep, opt, err)
	}
	return nil
}

// rejectDuringShutdown replies to an option that arrives once shutdown has
// begun with NBD_REP_ERR_SHUTDOWN and ends the session. EXPORT_NAME has no
// error reply, so that client is only disconnected.
func (c *serverConn) rejectDuringShutdown(hdr proto.OptionHeader) (optionResult, error) {
	if hdr.Option == proto.OptExportName {
		return optionResult{}, errConnDone
	}
	if err := c.discard(hdr.Length); err != nil {
		return optionResult{}, err
	}
	return optionResult{reply: proto.RepErrShutdown, message: "the server is shutting down", next: nextClose}, nil
}
