package nbdtest

import (
	"time"

	"github.com/gonbd/gonbd/export"
	"github.com/hashicorp/go-hclog"
)

// DefaultSize is the size of the memory export Start creates without
// Size or Backend: 16 MiB.
const DefaultSize = 16 << 20

// DefaultShutdownTimeout bounds the graceful shutdown at test cleanup.
const DefaultShutdownTimeout = 10 * time.Second

// PSKUsername is the identity in the keys.psk that PSK generates.
const PSKUsername = "alice"

// tlsKind is the kind of credentials the server requires.
type tlsKind int

const (
	tlsNone tlsKind = iota
	tlsPSK
	tlsX509
)

func (k tlsKind) String() string {
	switch k {
	case tlsPSK:
		return "PSK"
	case tlsX509:
		return "X509"
	}
	return "none"
}

// config collects the options of Start.
type config struct {
	tls             tlsKind
	readOnly        bool
	size            int64
	sizeSet         bool
	backend         export.Backend
	exportName      string
	logger          hclog.Logger
	shutdownTimeout time.Duration

	// conflicts lists options that cannot be combined, for Start to
	// report.
	conflicts []string
}

// Option configures Start.
type Option func(*config)

// PSK makes the server require TLS with a pre-shared key. Start writes a
// keys.psk with a random 256-bit key for the user PSKUsername ("alice")
// to a temporary directory that both the server and the clients read, as
// QEMU's tls-creds-psk and libnbd's tls-psk-file do.
func PSK() Option {
	return func(c *config) { c.setTLS(tlsPSK) }
}

// X509 makes the server require TLS with certificates. Start creates a CA,
// a server certificate for localhost and 127.0.0.1, and a client
// certificate, all with the extensions QEMU's sanity checks require. The
// server requires the client certificate (QEMU's verify-peer=on).
func X509() Option {
	return func(c *config) { c.setTLS(tlsX509) }
}

func (c *config) setTLS(k tlsKind) {
	if c.tls != tlsNone && c.tls != k {
		c.conflicts = append(c.conflicts, "both PSK and X509 given: choose one kind of TLS credentials")
	}
	c.tls = k
}

// ReadOnly serves the export read-only: writes, trims and write zeroes
// fail with EPERM.
func ReadOnly() Option {
	return func(c *config) { c.readOnly = true }
}

// Size sets the size in bytes of the memory export (default DefaultSize).
func Size(bytes int64) Option {
	return func(c *config) {
		if bytes < 0 {
			c.conflicts = append(c.conflicts, "negative Size: give the export size in bytes")
		}
		c.size, c.sizeSet = bytes, true
	}
}

// Backend serves b in place of a memory export. Start does not close b,
// but the server flushes it (Sync) when it shuts down.
func Backend(b export.Backend) Option {
	return func(c *config) {
		if b == nil {
			c.conflicts = append(c.conflicts, "nil Backend: pass a backend or leave the option out")
		}
		c.backend = b
	}
}

// ExportName sets the name of the export (default "", the name NBD
// clients ask for when a URI has no path).
func ExportName(name string) Option {
	return func(c *config) { c.exportName = name }
}

// Logger sends the server's log to l (default: no log).
func Logger(l hclog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// ShutdownTimeout bounds the graceful shutdown at test cleanup (default
// DefaultShutdownTimeout). Connections still open when it ends fail the
// test.
func ShutdownTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.conflicts = append(c.conflicts, "non-positive ShutdownTimeout: give a duration such as 5*time.Second")
		}
		c.shutdownTimeout = d
	}
}

func newConfig(opts []Option) *config {
	c := &config{
		size:            DefaultSize,
		logger:          hclog.NewNullLogger(),
		shutdownTimeout: DefaultShutdownTimeout,
	}
	for _, o := range opts {
		o(c)
	}
	if c.backend != nil && c.sizeSet {
		c.conflicts = append(c.conflicts, "both Size and Backend given: the backend sets the size, so drop Size")
	}
	if c.logger == nil {
		c.logger = hclog.NewNullLogger()
	}
	return c
}
