package tlscreds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/gonbd/gonbd/tlscreds/internal/tls13"
	"github.com/hashicorp/go-hclog"
)

// PSKKeysFileName is the file QEMU's tls-creds-psk reads from its dir.
const PSKKeysFileName = "keys.psk"

// DefaultPSKUsername is the identity a client uses without username=, as
// in QEMU.
const DefaultPSKUsername = "qemu"

// PSKConfig configures TLS-PSK credentials (QEMU's tls-creds-psk).
type PSKConfig struct {
	// Dir is the directory holding keys.psk (QEMU's dir=). Exactly one of
	// Dir and KeysFile is set.
	Dir string
	// KeysFile is the keys file itself (an NBD URI's tls-psk-file=).
	KeysFile string
	Endpoint Endpoint
	// Username is the identity a client offers. Empty means "qemu".
	Username string
	// Priority narrows the cipher suites and groups.
	Priority Priority
	Logger   hclog.Logger
}

// PSK is loaded TLS-PSK credentials. A server accepts every identity of
// the keys file; a client offers one. Sessions are TLS 1.3 with an
// external PSK and ECDHE (psk_dhe_ke), as GnuTLS negotiates between QEMU
// and libnbd.
type PSK struct {
	path     string
	endpoint Endpoint
	username string
	keys     map[string][]byte
	suites   []uint16
	groups   []uint16
	logger   hclog.Logger
}

// LoadPSK reads and checks the keys file.
func LoadPSK(cfg PSKConfig) (*PSK, error) {
	path, err := pskKeysPath(cfg)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	p := &PSK{path: path, endpoint: cfg.Endpoint, username: cfg.Username, logger: logger, keys: map[string][]byte{}}
	if p.username == "" {
		p.username = DefaultPSKUsername
	}
	if p.suites, p.groups, err = pskPriority(cfg.Priority); err != nil {
		return nil, err
	}

	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open PSK keys file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
		logger.Warn("PSK keys file is readable by group or others; restrict it with chmod 600",
			"file", path, "mode", fmt.Sprintf("%#o", fi.Mode().Perm()))
	}
	entries, err := parseKeysFile(path, f)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		p.keys[e.identity] = e.key
	}

	if cfg.Endpoint == EndpointClient {
		if _, ok := p.keys[p.username]; !ok {
			return nil, fmt.Errorf("%s: no key for username %q: add a line with psktool -u %s -p %s",
				path, p.username, p.username, path)
		}
	} else if len(p.keys) == 0 {
		return nil, fmt.Errorf("%s: no keys: add one with psktool -u USER -p %s", path, path)
	}
	return p, nil
}

func pskKeysPath(cfg PSKConfig) (string, error) {
	switch {
	case cfg.Dir != "" && cfg.KeysFile != "":
		return "", errors.New("PSK credentials: both a directory and a keys file given: use one")
	case cfg.KeysFile != "":
		return cfg.KeysFile, nil
	case cfg.Dir != "":
		return filepath.Join(cfg.Dir, PSKKeysFileName), nil
	}
	return "", errors.New("PSK credentials: no directory or keys file given: set dir= or tls-psk-file=")
}

// pskPriority turns a Priority into the suites and groups the PSK
// handshake may use. A Priority that forbids TLS 1.3 or leaves no suite
// an external PSK can use is an error, because PSK sessions here are
// TLS 1.3 only.
func pskPriority(pr Priority) (suites, groups []uint16, err error) {
	const versionTLS13 = 0x0304
	if pr.MaxVersion != 0 && pr.MaxVersion < versionTLS13 {
		return nil, nil, errors.New("priority disables TLS 1.3, which PSK credentials require: allow VERS-TLS1.3")
	}
	if pr.CipherSuites != nil {
		for _, id := range pr.CipherSuites {
			if id == tls13.TLSAES128GCMSHA256 || id == tls13.TLSChaCha20Poly1305SHA256 {
				suites = append(suites, id)
			}
		}
		if len(suites) == 0 {
			return nil, nil, errors.New("priority leaves no cipher suite for a SHA-256 PSK: allow AES-128-GCM or CHACHA20-POLY1305")
		}
	}
	if pr.Groups != nil {
		for _, g := range pr.Groups {
			if g == tls13.GroupX25519 || g == tls13.GroupSecp256r1 || g == tls13.GroupSecp384r1 {
				groups = append(groups, g)
			}
		}
		if len(groups) == 0 {
			return nil, nil, errors.New("priority leaves no supported group: allow GROUP-X25519, GROUP-SECP256R1 or GROUP-SECP384R1")
		}
	}
	return suites, groups, nil
}

func (p *PSK) config() *tls13.Config {
	return &tls13.Config{CipherSuites: p.suites, Groups: p.groups}
}

// ServerHandshake runs a TLS 1.3 PSK handshake as the server on raw. On
// failure it has sent the alert and logged one line; the caller closes
// raw.
func (p *PSK) ServerHandshake(ctx context.Context, raw net.Conn) (Conn, error) {
	if p.endpoint != EndpointServer {
		return nil, fmt.Errorf("PSK credentials from %s are for endpoint=client, not a server", p.path)
	}
	cfg := p.config()
	cfg.LookupKey = func(identity string) []byte { return p.keys[identity] }
	c, err := tls13.ServerHandshake(ctx, raw, cfg)
	if err != nil {
		p.logHandshakeError(raw, err)
		return nil, err
	}
	p.logSession(c)
	return pskConn{c}, nil
}

// ClientHandshake runs a TLS 1.3 PSK handshake as the client on raw.
// hostname is unused: a PSK authenticates both ends.
func (p *PSK) ClientHandshake(ctx context.Context, raw net.Conn, hostname string) (Conn, error) {
	if p.endpoint != EndpointClient {
		return nil, fmt.Errorf("PSK credentials from %s are for endpoint=server, not a client", p.path)
	}
	cfg := p.config()
	cfg.Identity = p.username
	cfg.Key = p.keys[p.username]
	c, err := tls13.ClientHandshake(ctx, raw, cfg)
	if err != nil {
		p.logHandshakeError(raw, err)
		if hint := pskClientHint(err, p.username); hint != "" {
			return nil, fmt.Errorf("%w: %s", err, hint)
		}
		return nil, err
	}
	p.logSession(c)
	return pskConn{c}, nil
}

// pskClientHint returns what to do when the server rejected this client's
// PSK, or "" for other failures. gonbd servers send an alert that names
// the problem, while GnuTLS servers such as qemu-nbd may just close.
func pskClientHint(err error, user string) string {
	var ae *tls13.AlertError
	if errors.As(err, &ae) && ae.Received {
		switch ae.Alert {
		case tls13.AlertUnknownPSKIdentity:
			return fmt.Sprintf("the server has no key for PSK user %q: add the user to the server's keys.psk", user)
		case tls13.AlertDecryptError:
			return fmt.Sprintf("the server holds another key for PSK user %q: copy the user's line of the server's keys.psk", user)
		}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Sprintf("the server closed the connection, so it may have no key or another key for PSK user %q: compare keys.psk on both ends", user)
	}
	return ""
}

// logHandshakeError logs a failed handshake at debug level only, because
// the caller reports the returned error: the NBD server logs it per
// client, and gonbd -L and gonbdinfo print it as their one-line message.
func (p *PSK) logHandshakeError(raw net.Conn, err error) {
	identity := ""
	var he *tls13.HandshakeError
	if errors.As(err, &he) {
		identity = he.Identity
	}
	p.logger.Debug("TLS-PSK handshake failed", "peer", raw.RemoteAddr().String(), "identity", identity, "error", err)
}

func (p *PSK) logSession(c *tls13.Conn) {
	p.logger.Debug("TLS-PSK session established", "peer", c.RemoteAddr().String(), "identity", c.Identity(),
		"tls", "TLS 1.3", "suite", c.CipherSuite(), "group", c.Group(), "hello_retry", c.HelloRetried())
}

// pskConn is an established PSK session.
type pskConn struct {
	*tls13.Conn
}

func (c pskConn) TLSInfo() Info {
	return Info{Version: "TLS 1.3", CipherSuite: c.CipherSuite(), Identity: c.Identity()}
}
