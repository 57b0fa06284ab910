package nbd

import (
	"errors"
	"fmt"

	"github.com/gonbd/gonbd/nbd/proto"
)

// Client errors come in two kinds. An *OptionError or a *RequestError is
// the server's error reply to one option or one request, and the
// connection stays usable. A *ProtocolError means the server broke the
// protocol, and the client has dropped the connection.

// ErrClientClosed is returned by requests made after Close, or pending
// when Close ran.
var ErrClientClosed = errors.New("nbd: client closed")

// ErrOptionUnsupported matches an *OptionError for NBD_REP_ERR_UNSUP.
var ErrOptionUnsupported = errors.New("nbd: option not supported by the server")

// OptionError is an error reply to a negotiation option.
type OptionError struct {
	Option proto.Option
	Reply  proto.Reply
	// Export is the export name the option was about, when it had one.
	Export string
	// Message is the optional text the server sent with the reply.
	Message string
}

func (e *OptionError) Error() string {
	msg := fmt.Sprintf("nbd: server rejected %s with %s", e.Option, e.Reply)
	if hint := e.hint(); hint != "" {
		msg += ": " + hint
	}
	if e.Message != "" {
		msg += fmt.Sprintf(" (server message: %q)", e.Message)
	}
	return msg
}

// hint returns what the user can do about the reply.
func (e *OptionError) hint() string {
	switch e.Reply {
	case proto.RepErrTLSReqd:
		return "the server requires TLS: pass --tls-creds, or use an nbds:// or nbds+unix:// URI"
	case proto.RepErrPolicy:
		if e.Option == proto.OptStartTLS {
			return "the server does not allow TLS: connect without TLS credentials"
		}
		return "the server's policy denies this client; check the server's access rules (--tls-authz, allowed addresses)"
	case proto.RepErrUnknown:
		return fmt.Sprintf("no export named %q on the server; list the exports with gonbdinfo --list", e.Export)
	case proto.RepErrShutdown:
		return "the server is shutting down; retry once it is back"
	case proto.RepErrUnsup:
		return "the server does not implement this option"
	case proto.RepErrBlockSizeReqd:
		return "the server requires block size negotiation"
	case proto.RepErrTooBig:
		return "the request is larger than the server accepts"
	case proto.RepErrPlatform:
		return "the server does not support this option on its platform"
	case proto.RepErrInvalid:
		return "the server considers the option invalid"
	}
	return ""
}

// Is makes errors.Is(err, ErrOptionUnsupported) true for ERR_UNSUP replies.
func (e *OptionError) Is(target error) bool {
	return target == ErrOptionUnsupported && e.Reply == proto.RepErrUnsup
}

// RequestError is an error reply to one transmission request.
type RequestError struct {
	Command proto.Command
	Offset  int64
	Length  int64
	Errno   proto.Errno
	// Message is the text of a structured error chunk, if any.
	Message string
}

func (e *RequestError) Error() string {
	msg := fmt.Sprintf("nbd: %s at offset %d, length %d: %s", e.Command, e.Offset, e.Length, e.Errno)
	if e.Message != "" {
		msg += fmt.Sprintf(" (server message: %q)", e.Message)
	}
	return msg
}

// Unwrap returns the errno, so errors.Is(err, proto.EIO) works.
func (e *RequestError) Unwrap() error { return e.Errno }

// ProtocolError reports a server that broke the NBD protocol. The client
// drops the connection on it.
type ProtocolError struct {
	Reason string
}

func (e *ProtocolError) Error() string { return "nbd: protocol violation by the server: " + e.Reason }

func protocolErrorf(format string, args ...any) *ProtocolError {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...)}
}
