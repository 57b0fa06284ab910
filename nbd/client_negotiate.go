package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/hashicorp/go-hclog"
)

// Limits on what the client accepts from a server during negotiation, so
// a hostile server cannot make it allocate or loop without bound.
const (
	// maxOptionReplyLen bounds one option reply payload. The largest valid
	// one is NBD_REP_SERVER with a 4096-byte name and a 4096-byte
	// description.
	maxOptionReplyLen = 64 << 10
	// maxOptionReplies bounds the replies to one option (exports listed,
	// meta contexts listed, information items).
	maxOptionReplies = 1 << 16
)

// Negotiation is a connection in the option phase of the fixed newstyle
// handshake: it can list exports, query them, and finally enter
// transmission with Go. It is not safe for concurrent use.
type Negotiation struct {
	conn   net.Conn
	cfg    *clientConfig
	log    hclog.Logger
	export string // default export for Go

	protocol   string
	fixed      bool
	noZeroes   bool
	tls        bool
	structured bool
	// oldstyle holds the export an oldstyle server sent unasked.
	oldstyle *ExportInfo
	finished bool
}

// ExportEntry is one NBD_REP_SERVER reply to NBD_OPT_LIST.
type ExportEntry struct {
	Name        string
	Description string
}

// Negotiate connects to the server an NBD URI names and runs the handshake
// up to the option phase: STARTTLS (as the URI and options ask) and
// NBD_OPT_STRUCTURED_REPLY.
func Negotiate(ctx context.Context, uri string, opts ...DialOption) (*Negotiation, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	cfg := newClientConfig(opts)
	if err := cfg.applyURI(u); err != nil {
		return nil, err
	}
	return negotiateConfig(ctx, u.Network(), u.Address(), cfg)
}

// NegotiateAddr is Negotiate for a network ("tcp" or "unix") and address
// in place of a URI. The export name defaults to "".
func NegotiateAddr(ctx context.Context, network, address string, opts ...DialOption) (*Negotiation, error) {
	cfg := newClientConfig(opts)
	if cfg.tlsHostname == "" && network == "tcp" {
		if host, _, err := net.SplitHostPort(address); err == nil {
			cfg.tlsHostname = host
		}
	}
	return negotiateConfig(ctx, network, address, cfg)
}

// applyURI merges the URI's export name and TLS parameters into cfg.
// Explicit dial options win over the URI.
func (cfg *clientConfig) applyURI(u *URI) error {
	if cfg.exportName == nil {
		name := u.ExportName
		cfg.exportName = &name
	}
	if cfg.tlsHostname == "" {
		cfg.tlsHostname = u.TLSHostname
	}
	if cfg.tlsHostname == "" {
		cfg.tlsHostname = u.Host
	}

	if cfg.tls == nil && cfg.uriCredentials != nil {
		creds, err := cfg.uriCredentials(u, cfg.logger)
		if err != nil {
			return err
		}
		cfg.tls = creds
		if creds != nil && !cfg.tlsModeSet {
			// nbd:// with credentials is opportunistic TLS, per the URI
			// specification; nbds:// below makes it required.
			cfg.tlsMode = TLSOptional
		}
	}
	if u.RequiresTLS() {
		if cfg.tls == nil {
			return fmt.Errorf("%s URI needs TLS credentials: add ?tls-certificates=DIR or ?tls-psk-file=FILE, or pass --tls-creds", u.Scheme)
		}
		cfg.tlsMode = TLSRequire
	}
	return nil
}

func negotiateConfig(ctx context.Context, network, address string, cfg *clientConfig) (*Negotiation, error) {
	if cfg.tlsMode != TLSOff && cfg.tls == nil {
		return nil, errors.New("nbd: TLS requested without credentials")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("connect to NBD server %s: %w", address, err)
	}
	return negotiateConn(ctx, conn, address, cfg)
}

// negotiateConn runs the handshake on an open connection, which it closes
// on failure.
func negotiateConn(ctx context.Context, conn net.Conn, peer string, cfg *clientConfig) (*Negotiation, error) {
	n := &Negotiation{conn: conn, cfg: cfg, log: cfg.logger.With("peer", peer)}
	if cfg.exportName != nil {
		n.export = *cfg.exportName
	}
	if err := n.start(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("negotiate with NBD server %s: %w", peer, err)
	}
	return n, nil
}

// watch applies ctx's deadline and cancellation to the connection until
// the returned function runs.
func (n *Negotiation) watch(ctx context.Context) (stop func()) {
	if d, ok := ctx.Deadline(); ok {
		_ = n.conn.SetDeadline(d)
	}
	conn := n.conn
	stopAfter := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stopAfter()
		_ = conn.SetDeadline(time.Time{})
	}
}

// start reads the server greeting and runs STARTTLS and
// NBD_OPT_STRUCTURED_REPLY.
func (n *Negotiation) start(ctx context.Context) error {
	defer n.watch(ctx)()

	if err := n.readGreeting(); err != nil {
		return err
	}
	if n.oldstyle != nil {
		if n.cfg.tlsMode == TLSRequire {
			return errors.New("the server speaks the oldstyle protocol, which has no TLS; connect without TLS")
		}
		return nil
	}

	if n.cfg.tlsMode != TLSOff {
		if err := n.startTLS(ctx); err != nil {
			return err
		}
	}

	if n.fixed && !n.cfg.noStructure {
		if err := n.negotiateStructuredReplies(); err != nil {
			return err
		}
	}
	return nil
}

// readGreeting reads NBDMAGIC and the newstyle or oldstyle greeting, and
// sends the client flags of the newstyle handshake.
func (n *Negotiation) readGreeting() error {
	var greet [18]byte
	if _, err := io.ReadFull(n.conn, greet[:16]); err != nil {
		return fmt.Errorf("read server greeting: %w", err)
	}
	if m := binary.BigEndian.Uint64(greet[0:8]); m != proto.NBDMagic {
		return fmt.Errorf("server greeting %#x is not NBDMAGIC: is this an NBD server?", m)
	}

	switch m := binary.BigEndian.Uint64(greet[8:16]); m {
	case proto.IHaveOpt:
	case proto.OldstyleMagic:
		return n.readOldstyle()
	default:
		return protocolErrorf("unknown handshake magic %#x after NBDMAGIC", m)
	}

	if _, err := io.ReadFull(n.conn, greet[16:18]); err != nil {
		return fmt.Errorf("read handshake flags: %w", err)
	}
	flags := binary.BigEndian.Uint16(greet[16:18])
	n.fixed = flags&proto.FlagFixedNewstyle != 0
	n.noZeroes = flags&proto.FlagNoZeroes != 0
	n.protocol = "newstyle"
	var clientFlags uint32
	if n.fixed {
		n.protocol = "newstyle-fixed"
		clientFlags |= proto.ClientFlagFixedNewstyle
	}
	if n.noZeroes {
		clientFlags |= proto.ClientFlagNoZeroes
	}
	n.log.Debug("server greeting", "protocol", n.protocol, "flags", flags)

	var out [4]byte
	binary.BigEndian.PutUint32(out[:], clientFlags)
	if _, err := n.conn.Write(out[:]); err != nil {
		return fmt.Errorf("send client flags: %w", err)
	}
	return nil
}

// readOldstyle reads the rest of an oldstyle greeting: size, flags and 124
// reserved bytes.
func (n *Negotiation) readOldstyle() error {
	var b [8 + 4 + 124]byte
	if _, err := io.ReadFull(n.conn, b[:]); err != nil {
		return fmt.Errorf("read oldstyle greeting: %w", err)
	}
	size := binary.BigEndian.Uint64(b[0:8])
	if size > maxExportSize {
		return protocolErrorf("export size %d is larger than %d", size, int64(maxExportSize))
	}
	n.protocol = "oldstyle"
	n.oldstyle = &ExportInfo{
		Size:  int64(size),
		Flags: proto.TransmissionFlags(binary.BigEndian.Uint32(b[8:12])),
	}
	n.log.Debug("oldstyle server", "size", size)
	return nil
}

// startTLS sends NBD_OPT_STARTTLS and runs the TLS handshake. With
// TLSOptional a server that refuses TLS is used in plaintext.
func (n *Negotiation) startTLS(ctx context.Context) error {
	if !n.fixed {
		if n.cfg.tlsMode == TLSOptional {
			return nil
		}
		return errors.New("the server does not speak fixed newstyle, so it cannot start TLS; connect without TLS")
	}
	hdr, _, err := n.roundTrip(proto.OptStartTLS, nil)
	if err != nil {
		var oe *OptionError
		if errors.As(err, &oe) && n.cfg.tlsMode == TLSOptional &&
			(oe.Reply == proto.RepErrUnsup || oe.Reply == proto.RepErrPolicy) {
			n.log.Info("server declined TLS, continuing without", "reply", oe.Reply)
			return nil
		}
		return err
	}
	if hdr.Reply != proto.RepAck || hdr.Length != 0 {
		return protocolErrorf("%s got reply %s of length %d, want NBD_REP_ACK", proto.OptStartTLS, hdr.Reply, hdr.Length)
	}

	tlsConn, err := n.cfg.tls.ClientHandshake(ctx, n.conn, n.cfg.tlsHostname)
	if err != nil {
		if hint := certificateAlertHint(err); hint != "" {
			return fmt.Errorf("start TLS: %w: %s", err, hint)
		}
		return fmt.Errorf("start TLS: %w", err)
	}
	n.conn = tlsConn
	n.tls = true
	info := tlsConn.TLSInfo()
	n.log.Debug("TLS established", "tls", info.Version, "suite", info.CipherSuite, "identity", info.Identity)
	return nil
}

// negotiateStructuredReplies sends NBD_OPT_STRUCTURED_REPLY. Any error
// reply but NBD_REP_ERR_TLS_REQD leaves simple replies in use.
func (n *Negotiation) negotiateStructuredReplies() error {
	hdr, _, err := n.roundTrip(proto.OptStructuredReply, nil)
	var oe *OptionError
	switch {
	case errors.As(err, &oe) && oe.Reply != proto.RepErrTLSReqd:
		n.log.Debug("structured replies not available", "reply", oe.Reply)
		return nil
	case err != nil:
		return err
	case hdr.Reply != proto.RepAck:
		return protocolErrorf("%s got reply %s, want NBD_REP_ACK", proto.OptStructuredReply, hdr.Reply)
	}
	n.structured = true
	return nil
}

// Protocol returns "newstyle-fixed", "newstyle" or "oldstyle", the names
// nbdinfo prints.
func (n *Negotiation) Protocol() string { return n.protocol }

// TLS reports whether the connection is TLS-protected.
func (n *Negotiation) TLS() bool { return n.tls }

// StructuredReplies reports whether the server agreed to structured
// replies.
func (n *Negotiation) StructuredReplies() bool { return n.structured }

// ExportName returns the export Go connects to when given "".
func (n *Negotiation) ExportName() string { return n.export }

// Abort ends the negotiation with NBD_OPT_ABORT and closes the connection.
// The server's acknowledgement is not awaited, which the protocol allows.
func (n *Negotiation) Abort() error {
	if n.finished {
		return nil
	}
	n.finished = true
	if n.fixed && n.oldstyle == nil {
		var hdr [proto.OptionHeaderSize]byte
		_ = n.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = n.conn.Write(proto.OptionHeader{Option: proto.OptAbort}.Encode(hdr[:]))
	}
	return n.conn.Close()
}

// requireOptions returns an error unless the server accepts options with
// error replies (fixed newstyle).
func (n *Negotiation) requireOptions(opt proto.Option) error {
	if n.finished {
		return errors.New("nbd: negotiation already finished")
	}
	if n.oldstyle != nil || !n.fixed {
		return fmt.Errorf("nbd: the %s server cannot handle %s", n.protocol, opt)
	}
	return nil
}

// sendOption writes one option request.
func (n *Negotiation) sendOption(opt proto.Option, payload []byte) error {
	buf := make([]byte, proto.OptionHeaderSize+len(payload))
	proto.OptionHeader{Option: opt, Length: uint32(len(payload))}.Encode(buf)
	copy(buf[proto.OptionHeaderSize:], payload)
	if _, err := n.conn.Write(buf); err != nil {
		return fmt.Errorf("send %s: %w", opt, err)
	}
	n.log.Debug("sent option", "option", opt, "length", len(payload))
	return nil
}

// readReply reads one option reply to opt. An error reply becomes an
// *OptionError; its header is returned too.
func (n *Negotiation) readReply(opt proto.Option) (proto.OptionReplyHeader, []byte, error) {
	var b [proto.OptionReplyHeaderSize]byte
	if _, err := io.ReadFull(n.conn, b[:]); err != nil {
		if n.tls && errors.Is(err, io.EOF) {
			// In TLS 1.3 the client's handshake ends before the server
			// has judged the client certificate. A server that rejects
			// it without an alert closes the connection instead of
			// replying: qemu-nbd 7.2 for a revoked certificate, gonbd
			// and qemu-nbd for an identity that --tls-authz denies.
			return proto.OptionReplyHeader{}, nil, fmt.Errorf("read reply to %s: %w: the server closed the connection after the TLS handshake, so it may have rejected this client's certificate or TLS identity (see the server's log)", opt, err)
		}
		if n.tls {
			if hint := certificateAlertHint(err); hint != "" {
				return proto.OptionReplyHeader{}, nil, fmt.Errorf("read reply to %s: %w: %s", opt, err, hint)
			}
		}
		return proto.OptionReplyHeader{}, nil, fmt.Errorf("read reply to %s: %w", opt, err)
	}
	hdr, err := proto.DecodeOptionReplyHeader(b[:])
	if err != nil {
		return hdr, nil, protocolErrorf("reply to %s: %v", opt, err)
	}
	if hdr.Option != opt {
		return hdr, nil, protocolErrorf("reply names %s, want %s", hdr.Option, opt)
	}
	if hdr.Length > maxOptionReplyLen {
		return hdr, nil, protocolErrorf("%s reply to %s is %d bytes, the client accepts up to %d", hdr.Reply, opt, hdr.Length, maxOptionReplyLen)
	}
	payload := make([]byte, hdr.Length)
	if _, err := io.ReadFull(n.conn, payload); err != nil {
		return hdr, nil, fmt.Errorf("read %s reply to %s: %w", hdr.Reply, opt, err)
	}
	n.log.Debug("option reply", "option", opt, "reply", hdr.Reply, "length", hdr.Length)
	if hdr.Reply.IsError() {
		return hdr, payload, &OptionError{Option: opt, Reply: hdr.Reply, Message: printableMessage(payload)}
	}
	return hdr, payload, nil
}

// roundTrip sends an option and reads one reply.
func (n *Negotiation) roundTrip(opt proto.Option, payload []byte) (proto.OptionReplyHeader, []byte, error) {
	if err := n.sendOption(opt, payload); err != nil {
		return proto.OptionReplyHeader{}, nil, err
	}
	return n.readReply(opt)
}

// printableMessage returns a server message with control characters
// replaced, so it cannot disturb a terminal.
func printableMessage(b []byte) string {
	out := []rune(string(b))
	for i, r := range out {
		if r < 0x20 || r == 0x7f {
			out[i] = '?'
		}
	}
	return string(out)
}

// appendString appends a 32-bit length and s.
func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func checkStringLen(what, s string) error {
	if len(s) > proto.MaxStringLen {
		return fmt.Errorf("nbd: %s is %d bytes, the protocol allows up to %d", what, len(s), proto.MaxStringLen)
	}
	return nil
}

// certificateAlertHint returns what to do about a TLS alert in which the
// server rejects this client's certificate, or "" for other errors.
// In TLS 1.3 such an alert arrives with the first reply after the
// handshake. crypto/tls exports no type for received alerts, so the
// alert is recognized by its text.
func certificateAlertHint(err error) string {
	msg := err.Error()
	if strings.Contains(msg, "remote error: tls: certificate required") {
		return "the server requires a client certificate: put client-cert.pem and client-key.pem in the client's TLS credentials directory"
	}
	for _, alert := range []string{"bad certificate", "unknown certificate authority", "revoked certificate",
		"expired certificate", "unsupported certificate"} {
		if strings.Contains(msg, "remote error: tls: "+alert) {
			return "the server rejected this client's certificate (its log says why)"
		}
	}
	return ""
}
