// Package nbd implements the NBD protocol: the server (fixed newstyle
// handshake and transmission), the client, and NBD URIs.
package nbd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
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

// TLSMode is whether clients must, may or cannot use TLS.
type TLSMode int

const (
	// TLSOff offers no TLS: the server replies to NBD_OPT_STARTTLS with NBD_REP_ERR_POLICY.
	TLSOff TLSMode = iota
	// TLSOptional allows TLS but serves plaintext clients too (nbdkit
	// --tls=on).
	TLSOptional
	// TLSRequire replies to every option but STARTTLS and ABORT with
	// NBD_REP_ERR_TLS_REQD until TLS is up (qemu-nbd's only mode).
	TLSRequire
)

func (m TLSMode) String() string {
	switch m {
	case TLSOff:
		return "off"
	case TLSOptional:
		return "optional"
	case TLSRequire:
		return "require"
	}
	return fmt.Sprintf("TLSMode(%d)", int(m))
}

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
	// WriteTimeout bounds each batch of replies written to a client
	// (default 60 s), so a client that stops reading cannot hold a
	// connection's workers forever.
	WriteTimeout time.Duration
	// Persistent keeps serving after the last client leaves. Without it
	// Serve returns once a client has connected and all have left, as
	// qemu-nbd does without -t.
	Persistent bool

	Logger hclog.Logger // nil: hclog.NewNullLogger()
}

// Defaults for the zero values of ServerConfig's limits.
const (
	DefaultHandshakeLimit = 10 * time.Second
	DefaultMaxInFlight    = 64
	DefaultWriteTimeout   = 60 * time.Second
)

// Server serves exports over NBD.
type Server struct {
	cfg     ServerConfig
	log     hclog.Logger
	exports map[string]*Export

	// connSlots holds one token per open connection when MaxConnections
	// is set; the accept loop waits for a free slot before accepting.
	connSlots chan struct{}

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	everConn  bool          // a client has finished negotiating at least once
	idle      chan struct{} // closed when the last client left (non-persistent)
	closing   chan struct{} // closed when Shutdown starts
	shutdown  bool
	connWG    sync.WaitGroup
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("nbd: server closed")

// NewServer checks cfg and returns a server for it.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.HandshakeLimit <= 0 {
		cfg.HandshakeLimit = DefaultHandshakeLimit
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.MaxConnections < 0 {
		return nil, fmt.Errorf("nbd: invalid MaxConnections %d: use 0 for unlimited or a positive count", cfg.MaxConnections)
	}
	if cfg.TLSMode != TLSOff && cfg.TLS == nil {
		return nil, fmt.Errorf("nbd: TLS mode %s needs TLS credentials: set ServerConfig.TLS", cfg.TLSMode)
	}

	exports := make(map[string]*Export, len(cfg.Exports))
	for _, e := range cfg.Exports {
		if err := checkExport(e); err != nil {
			return nil, err
		}
		if _, dup := exports[e.Name]; dup {
			return nil, fmt.Errorf("nbd: export name %q given twice: export names must be unique", e.Name)
		}
		exports[e.Name] = e
	}

	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		exports:   exports,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*serverConn]struct{}),
		idle:      make(chan struct{}),
		closing:   make(chan struct{}),
	}
	if cfg.MaxConnections > 0 {
		s.connSlots = make(chan struct{}, cfg.MaxConnections)
	}
	return s, nil
}

func checkExport(e *Export) error {
	if e == nil || e.Backend == nil {
		return errors.New("nbd: export without a backend: set Export.Backend")
	}
	if len(e.Name) > maxStringLen {
		return fmt.Errorf("nbd: export name of %d bytes is too long: the protocol allows %d", len(e.Name), maxStringLen)
	}
	if len(e.Description) > maxStringLen {
		return fmt.Errorf("nbd: description of export %q is %d bytes: the protocol allows %d", e.Name, len(e.Description), maxStringLen)
	}
	if e.AllocationDepth {
		if _, ok := e.Backend.(export.DepthExtenter); !ok {
			return fmt.Errorf("nbd: export %q offers qemu:allocation-depth but its backend does not report allocation depth", e.Name)
		}
	}
	return nil
}

// Serve accepts connections on l until ctx is done, Shutdown is called,
// or (without Persistent) the last client has left. It returns
// ErrServerClosed after Shutdown, ctx.Err() when ctx ends, and nil when a
// non-persistent server's last client has left.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if !s.addListener(l) {
		return ErrServerClosed
	}
	defer s.removeListener(l)

	stopWatch := make(chan struct{})
	defer close(stopWatch)
	go func() {
		select {
		case <-ctx.Done():
		case <-s.closing:
		case <-s.idle:
		case <-stopWatch:
			return
		}
		_ = l.Close()
	}()

	s.log.Debug("accepting connections", "addr", l.Addr().String())
	var delay time.Duration
	for {
		if !s.acquireConnSlot(ctx) {
			return s.serveResult(ctx, nil)
		}

		c, err := l.Accept()
		if err != nil {
			s.releaseConnSlot()
			if result := s.serveResult(ctx, err); result != err {
				return result
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Temporary failures such as running out of file
				// descriptors: back off as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed, retrying", "error", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("nbd: accept on %s: %w", l.Addr(), err)
		}
		delay = 0

		sc := s.newServerConn(c)
		if !s.addConn(sc) {
			s.releaseConnSlot()
			_ = c.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.releaseConnSlot()
			s.runConn(ctx, sc)
		}()
	}
}

// serveResult turns the reason the accept loop stopped into Serve's
// result; it returns err itself when none of the stop conditions holds.
func (s *Server) serveResult(ctx context.Context, err error) error {
	select {
	case <-s.closing:
		return ErrServerClosed
	default:
	}
	if ctx.Err() != nil {
		s.closeAllConns()
		s.connWG.Wait()
		return ctx.Err()
	}
	select {
	case <-s.idle:
		s.log.Info("last client left, stopping (not persistent)")
		return nil
	default:
	}
	return err
}

// ServeConn runs one client connection to completion. It counts towards
// MaxConnections only when Serve accepted it.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	sc := s.newServerConn(c)
	if !s.addConn(sc) {
		_ = c.Close()
		return
	}
	s.runConn(ctx, sc)
}

// runConn runs sc until it ends or ctx is done, then removes it from the server's connections.
func (s *Server) runConn(ctx context.Context, sc *serverConn) {
	defer s.removeConn(sc)

	stop := context.AfterFunc(ctx, sc.abort)
	defer stop()
	sc.serve(ctx)
}

// Shutdown stops accepting, lets in-flight requests finish, replies
// ESHUTDOWN to later requests, flushes the backends and waits for connections
// to close or ctx to end. When ctx ends first it closes the remaining
// connections and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.shutdown {
		s.shutdown = true
		close(s.closing)
	}
	for l := range s.listeners {
		_ = l.Close()
	}
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	s.log.Info("shutting down", "connections", len(conns))
	for _, c := range conns {
		c.beginShutdown()
	}

	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	var waitErr error
	select {
	case <-done:
	case <-ctx.Done():
		s.closeAllConns()
		waitErr = ctx.Err()
	}

	var errs []error
	for _, e := range s.cfg.Exports {
		if err := e.Backend.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("nbd: sync export %q: %w", e.Name, err))
		}
	}
	if waitErr != nil {
		errs = append(errs, waitErr)
	}
	return errors.Join(errs...)
}

func (s *Server) addListener(l net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	s.listeners[l] = struct{}{}
	return true
}

func (s *Server) removeListener(l net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.listeners, l)
}

func (s *Server) addConn(c *serverConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	return true
}

// markNegotiated records that a client reached transmission. Like
// qemu-nbd, a non-persistent server only stops after such a client: a
// port probe, a failed handshake or an nbdinfo --list that aborts does not
// end it.
func (s *Server) markNegotiated() {
	s.mu.Lock()
	s.everConn = true
	s.mu.Unlock()
}

func (s *Server) removeConn(c *serverConn) {
	s.mu.Lock()
	delete(s.conns, c)
	if len(s.conns) == 0 && s.everConn && !s.cfg.Persistent {
		select {
		case <-s.idle:
		default:
			close(s.idle)
		}
	}
	s.mu.Unlock()
	s.connWG.Done()
}

func (s *Server) closeAllConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.abort()
	}
}

// acquireConnSlot waits until fewer than MaxConnections clients are
// connected. Like qemu-nbd -e, the server stops accepting while full, so
// further clients wait in the listen backlog rather than being dropped.
func (s *Server) acquireConnSlot(ctx context.Context) bool {
	if s.connSlots == nil {
		return true
	}
	select {
	case s.connSlots <- struct{}{}:
		return true
	case <-ctx.Done():
	case <-s.closing:
	case <-s.idle:
	}
	return false
}

func (s *Server) releaseConnSlot() {
	if s.connSlots != nil {
		<-s.connSlots
	}
}
