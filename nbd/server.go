// Package nbd implements the NBD protocol: the server (fixed newstyle
// handshake and transmission), the client, and NBD URIs.
package nbd

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/hashicorp/go-hclog"
)

// Export is one named export the server offers.
type Export struct {
	Name        string
	Description string
	Backend     export.Backend
	// ReadOnly forces a read-only export even if the backend can write.
	ReadOnly bool
	// AllocationDepth offers the qemu:allocation-depth meta context
	// (qemu-nbd -A); the backend must implement export.DepthExtenter.
	AllocationDepth bool
}

// TLSMode says whether clients must, may or cannot use TLS.
type TLSMode int

const (
	// TLSOff offers no TLS: NBD_OPT_STARTTLS is answered NBD_REP_ERR_POLICY.
	TLSOff TLSMode = iota
	// TLSOptional allows TLS but serves plaintext clients too (nbdkit
	// --tls=on).
	TLSOptional
	// TLSRequire answers every option but STARTTLS and ABORT with
	// NBD_REP_ERR_TLS_REQD until TLS is up (qemu-nbd's only mode).
	TLSRequire
)

// Authorizer decides whether a TLS identity may use the server
// (--tls-authz). The identity is tlscreds.Info.Identity.
type Authorizer interface {
	IsAllowed(identity string) (bool, error)
}

// ServerConfig configures a Server. The zero value of each limit selects
// the default noted beside it.
type ServerConfig struct {
	Exports []*Export

	TLS     tlscreds.Server // nil: no TLS
	TLSMode TLSMode
	Authz   Authorizer // nil: any authenticated peer

	// HandshakeLimit drops a client that has not finished negotiating in
	// time (default 10 s, as qemu-nbd --handshake-limit).
	HandshakeLimit time.Duration
	// MaxConnections caps concurrent clients; 0 means unlimited.
	MaxConnections int
	// MaxInFlight caps requests in flight per connection (default 64).
	MaxInFlight int
	// Persistent keeps serving after the last client leaves. Without it
	// Serve returns once a client has connected and all have left, as
	// qemu-nbd does without -t.
	Persistent bool

	Logger hclog.Logger // nil: hclog.NewNullLogger()
}

// Server serves exports over NBD.
type Server struct {
	cfg ServerConfig
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("nbd: server closed")

// NewServer returns a server for cfg.
func NewServer(cfg ServerConfig) (*Server, error) {
	return &Server{cfg: cfg}, nil
}

// Serve accepts connections on l until ctx is done, Shutdown is called,
// or (without Persistent) the last client has left.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	return errors.New("nbd: Serve not implemented")
}

// ServeConn runs one client connection to completion.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	_ = c.Close()
}

// Shutdown stops accepting, lets in-flight requests finish, answers later
// requests with ESHUTDOWN, flushes the backends and waits for connections
// to close or ctx to end.
func (s *Server) Shutdown(ctx context.Context) error {
	return nil
}
