// Package nbdtest runs an in-process NBD server for tests, with optional
// TLS (PSK or x509), and hands out the URI and QEMU arguments that real
// clients need to reach it.
//
// Start listens on a loopback TCP port, serves a 16 MiB memory export
// named "" and stops the server when the test ends:
//
//	func TestBackup(t *testing.T) {
//		srv := nbdtest.Start(t, nbdtest.PSK())
//
//		// libnbd tools and gonbd's client take the URI.
//		out, err := exec.Command("nbdinfo", srv.URI()).CombinedOutput()
//		require.NoError(t, err, string(out))
//
//		// qemu-img and qemu-io take --object and --image-opts.
//		args := append([]string{"info"}, srv.QEMUArgs()...)
//		out, err = exec.Command("qemu-img", args...).CombinedOutput()
//		require.NoError(t, err, string(out))
//
//		// Go code can use gonbd's client directly.
//		c := srv.Dial(t)
//		_, err = c.WriteAt([]byte("hello"), 0)
//		require.NoError(t, err)
//	}
//
// Credentials live in the test's temporary directory, and the PSK user is
// PSKUsername ("alice").
package nbdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/export/memory"
	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/hashicorp/go-hclog"
)

// Server is a running test server. Its methods are safe for concurrent use.
type Server struct {
	srv        *nbd.Server
	addr       *net.TCPAddr
	backend    export.Backend
	exportName string
	tls        tlsKind
	credsDir   string
	pskFile    string
	timeout    time.Duration
	log        hclog.Logger

	serveDone chan struct{}
	serveErr  error

	closeOnce sync.Once
	closeErr  error
}

// Start starts a server on 127.0.0.1 with a free port and registers
// tb.Cleanup to shut it down. It fails the test at once (tb.Fatal) if the
// options conflict or the server cannot start, and at cleanup if the
// graceful shutdown does not finish within the shutdown timeout.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	cfg := newConfig(opts)
	if len(cfg.conflicts) > 0 {
		tb.Fatalf("nbdtest: %s", strings.Join(cfg.conflicts, "; "))
		return nil
	}

	s, err := start(cfg, tb.TempDir())
	if err != nil {
		tb.Fatalf("nbdtest: %v", err)
		return nil
	}
	tb.Cleanup(func() {
		// A test that called Close has seen its error already.
		if first, err := s.close(); first && err != nil {
			tb.Errorf("nbdtest: %v", err)
		}
	})
	return s
}

// start builds and starts the server. The credentials go under dir.
func start(cfg *config, dir string) (*Server, error) {
	backend := cfg.backend
	if backend == nil {
		backend = memory.New(cfg.size, false)
	}
	s := &Server{
		backend:    backend,
		exportName: cfg.exportName,
		tls:        cfg.tls,
		timeout:    cfg.shutdownTimeout,
		log:        cfg.logger,
		serveDone:  make(chan struct{}),
	}

	serverCfg := nbd.ServerConfig{
		Exports: []*nbd.Export{{
			Name:     cfg.exportName,
			Backend:  backend,
			ReadOnly: cfg.readOnly,
		}},
		// A test usually connects several times (qemu-img opens an image
		// more than once), so the server must outlive its first client.
		Persistent: true,
		Logger:     cfg.logger,
	}
	creds, err := newCredentials(cfg.tls, dir, cfg.logger)
	if err != nil {
		return nil, err
	}
	if creds != nil {
		serverCfg.TLS = creds.server
		serverCfg.TLSMode = nbd.TLSRequire
		s.credsDir = creds.clientDir
		if cfg.tls == tlsPSK {
			s.pskFile = creds.clientDir + "/" + tlscreds.PSKKeysFileName
		}
	}

	s.srv, err = nbd.NewServer(serverCfg)
	if err != nil {
		return nil, fmt.Errorf("configure server: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen on loopback: %w", err)
	}
	s.addr = l.Addr().(*net.TCPAddr)

	go func() {
		defer close(s.serveDone)
		s.serveErr = s.srv.Serve(context.Background(), l)
	}()
	return s, nil
}

// Close shuts the server down gracefully: it stops accepting, lets
// requests in flight finish, flushes the backend and waits for every
// connection to close, at most for the shutdown timeout. Start's cleanup
// calls it. Later calls return the first call's result.
func (s *Server) Close() error {
	_, err := s.close()
	return err
}

// close runs the shutdown once and reports whether this call ran it.
func (s *Server) close() (first bool, err error) {
	s.closeOnce.Do(func() {
		s.closeErr = s.shutdown()
		first = true
	})
	return first, s.closeErr
}

func (s *Server) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()

	var errs []error
	if err := s.srv.Shutdown(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("connections still open %s after shutdown began, so they were closed: %w", s.timeout, err)
		}
		errs = append(errs, fmt.Errorf("shut down server on %s: %w", s.addr, err))
	}

	// Serve returns as soon as Shutdown closes the listener, so this wait
	// is short. It gets its own timer because ctx may have expired.
	timer := time.NewTimer(s.timeout)
	defer timer.Stop()
	select {
	case <-s.serveDone:
		if s.serveErr != nil && !errors.Is(s.serveErr, nbd.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("serve on %s: %w", s.addr, s.serveErr))
		}
	case <-timer.C:
		errs = append(errs, fmt.Errorf("accept loop on %s still running %s after shutdown", s.addr, s.timeout))
	}
	return errors.Join(errs...)
}

// Addr returns the address the server listens on, such as
// "127.0.0.1:40123".
func (s *Server) Addr() string { return s.addr.String() }

// Host returns the IP address the server listens on: "127.0.0.1".
func (s *Server) Host() string { return s.addr.IP.String() }

// Port returns the TCP port the server listens on.
func (s *Server) Port() int { return s.addr.Port }

// ExportName returns the name of the export.
func (s *Server) ExportName() string { return s.exportName }

// Backend returns the backend the export serves, so that a test can check
// what a client wrote.
func (s *Server) Backend() export.Backend { return s.backend }

// CredsDir returns the client-side credential directory: for PSK the
// directory with keys.psk (QEMU's tls-creds-psk dir=), for x509 a
// directory with ca-cert.pem, client-cert.pem and client-key.pem (QEMU's
// tls-creds-x509 dir= and libnbd's tls-certificates=). Without TLS it
// returns "".
func (s *Server) CredsDir() string { return s.credsDir }

// PSKFile returns the path of keys.psk, or "" unless the server uses PSK.
func (s *Server) PSKFile() string { return s.pskFile }

// URI returns an NBD URI for the export that libnbd tools (nbdinfo,
// nbdcopy) and nbd.Dial accept, with the credentials in its query:
//
//	nbd://127.0.0.1:PORT/
//	nbds://alice@127.0.0.1:PORT/?tls-psk-file=DIR/keys.psk
//	nbds://127.0.0.1:PORT/?tls-certificates=DIR
//
// qemu-img 7.2 rejects the nbds scheme ("Unknown protocol 'nbds'") and
// takes TLS credentials only as an --object, so use QEMUArgs for QEMU.
func (s *Server) URI() string {
	u := url.URL{Scheme: "nbd", Host: s.Addr(), Path: "/" + s.exportName}
	switch s.tls {
	case tlsPSK:
		u.Scheme = "nbds"
		u.User = url.User(PSKUsername)
		u.RawQuery = "tls-psk-file=" + escapeQueryValue(s.pskFile)
	case tlsX509:
		u.Scheme = "nbds"
		u.RawQuery = "tls-certificates=" + escapeQueryValue(s.credsDir)
	}
	return u.String()
}

// escapeQueryValue percent-encodes s for a URI query but keeps "/", so
// that paths stay readable in logs. libnbd and nbd.ParseURI decode both.
func escapeQueryValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) || c == '/' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// isUnreserved reports whether c is an unreserved URI character (RFC 3986
// section 2.3).
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// QEMUObjectID is the id of the tls-creds object in QEMUArgs.
const QEMUObjectID = "tls0"

// QEMUArgs returns the arguments that qemu-img and qemu-io need to open
// the export: with TLS an --object that loads the client credentials, then
// --image-opts and the image options, which must stay together and come
// last because qemu-img takes the image as its last argument:
//
//	--object tls-creds-psk,id=tls0,dir=DIR,username=alice,endpoint=client
//	--image-opts driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=PORT,export=,tls-creds=tls0
//
// For example: exec.Command("qemu-img", append([]string{"info"}, srv.QEMUArgs()...)...).
func (s *Server) QEMUArgs() []string {
	var args []string
	switch s.tls {
	case tlsPSK:
		args = append(args, "--object", "tls-creds-psk,id="+QEMUObjectID+",dir="+escapeQEMUValue(s.credsDir)+
			",username="+PSKUsername+",endpoint=client")
	case tlsX509:
		args = append(args, "--object", "tls-creds-x509,id="+QEMUObjectID+",dir="+escapeQEMUValue(s.credsDir)+
			",endpoint=client")
	}
	return append(args, "--image-opts", s.QEMUImageOpts())
}

// QEMUImageOpts returns the --image-opts value of QEMUArgs, for callers
// that build the command line themselves. With TLS it names the object
// QEMUObjectID, which QEMUArgs defines.
func (s *Server) QEMUImageOpts() string {
	opts := "driver=nbd,server.type=inet,server.host=" + s.Host() +
		",server.port=" + strconv.Itoa(s.Port()) +
		",export=" + escapeQEMUValue(s.exportName)
	if s.tls != tlsNone {
		opts += ",tls-creds=" + QEMUObjectID
	}
	return opts
}

// escapeQEMUValue doubles commas, QemuOpts' escape for a comma inside a
// value.
func escapeQEMUValue(s string) string {
	return strings.ReplaceAll(s, ",", ",,")
}

// Dial connects gonbd's client to the export with the credentials of URI
// and closes the client at test cleanup, before the server stops. It fails
// the test if the connection fails.
func (s *Server) Dial(tb testing.TB, opts ...nbd.DialOption) *nbd.Client {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	c, err := nbd.Dial(ctx, s.URI(), opts...)
	if err != nil {
		tb.Fatalf("nbdtest: %v", err)
		return nil
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}
