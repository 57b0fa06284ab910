package nbd

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gonbd/gonbd/nbd/proto"
)

// DefaultPort is the NBD port assigned by IANA.
const DefaultPort = 10809

// URI is a parsed NBD URI, as defined by the NBD URI specification
// (doc/uri.md of the NetworkBlockDevice project).
type URI struct {
	// Scheme is nbd, nbds, nbd+unix or nbds+unix.
	Scheme string
	// Host and Port are the TCP endpoint; empty for Unix sockets.
	Host string
	Port int
	// Socket is the Unix socket path (the socket query parameter). A
	// leading NUL selects the Linux abstract namespace.
	Socket string
	// ExportName is the URI path without its leading slash.
	ExportName string
	// Username is the userinfo part: the TLS PSK username.
	Username string

	// TLSCertificates is a directory of x509 files (ca-cert.pem,
	// client-cert.pem, client-key.pem), from tls-certificates.
	TLSCertificates string
	// TLSPSKFile is a psktool keys file, from tls-psk-file.
	TLSPSKFile string
	// TLSVerifyPeer is nil unless tls-verify-peer was given.
	TLSVerifyPeer *bool
	// TLSHostname overrides the host name the server certificate must
	// match, from tls-hostname.
	TLSHostname string
	// TLSType is anon, x509 or psk, from tls-type ("" when absent).
	TLSType string
}

// uriQueryParams are the query parameters ParseURI understands.
var uriQueryParams = map[string]bool{
	"socket":           true,
	"tls-certificates": true,
	"tls-psk-file":     true,
	"tls-verify-peer":  true,
	"tls-hostname":     true,
	"tls-type":         true,
}

// ParseURI parses an NBD URI. Parts the specification does not define
// (a password, a fragment, unknown query parameters) are errors, and so are
// parts that contradict the scheme (socket with nbd://, a host with
// nbd+unix://).
func ParseURI(s string) (*URI, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("invalid NBD URI %q: %w", s, err)
	}
	out := &URI{Scheme: strings.ToLower(u.Scheme)}

	switch out.Scheme {
	case "nbd", "nbds", "nbd+unix", "nbds+unix":
	case "":
		return nil, fmt.Errorf("invalid NBD URI %q: missing scheme; write nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH", s)
	default:
		return nil, fmt.Errorf("invalid NBD URI %q: unknown scheme %q; use nbd, nbds, nbd+unix or nbds+unix", s, u.Scheme)
	}
	if u.Opaque != "" {
		return nil, fmt.Errorf("invalid NBD URI %q: it must begin with %s://", s, out.Scheme)
	}
	if u.Fragment != "" || strings.HasSuffix(s, "#") {
		return nil, fmt.Errorf("invalid NBD URI %q: fragment %q is not part of an NBD URI; remove it", s, u.Fragment)
	}

	if err := out.parseAuthority(s, u); err != nil {
		return nil, err
	}
	if err := out.parsePath(s, u); err != nil {
		return nil, err
	}
	if err := out.parseQuery(s, u.RawQuery); err != nil {
		return nil, err
	}
	return out, nil
}

// IsUnix reports whether the URI names a Unix socket.
func (u *URI) IsUnix() bool { return strings.HasSuffix(u.Scheme, "+unix") }

// RequiresTLS reports whether the scheme demands TLS (nbds, nbds+unix).
func (u *URI) RequiresTLS() bool { return strings.HasPrefix(u.Scheme, "nbds") }

// Network returns "tcp" or "unix", for net.Dial.
func (u *URI) Network() string {
	if u.IsUnix() {
		return "unix"
	}
	return "tcp"
}

// Address returns the address to dial: host:port, or the socket path with
// a leading NUL rewritten to Go's "@" form of an abstract socket name.
func (u *URI) Address() string {
	if u.IsUnix() {
		if strings.HasPrefix(u.Socket, "\x00") {
			return "@" + u.Socket[1:]
		}
		return u.Socket
	}
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
}

func (u *URI) parseAuthority(s string, pu *url.URL) error {
	if pu.User != nil {
		if _, hasPassword := pu.User.Password(); hasPassword {
			return fmt.Errorf("invalid NBD URI %q: a password in the user part is not supported; pass the PSK in tls-psk-file", s)
		}
		u.Username = pu.User.Username()
		if u.Username == "" {
			return fmt.Errorf("invalid NBD URI %q: empty user name before '@'; remove the '@' or name the PSK user", s)
		}
	}

	host, port := pu.Hostname(), pu.Port()
	if u.IsUnix() {
		if host != "" || port != "" {
			return fmt.Errorf("invalid NBD URI %q: %s URIs take no host or port (got %q); write %s:///EXPORT?socket=PATH", s, u.Scheme, pu.Host, u.Scheme)
		}
		return nil
	}

	if strings.HasSuffix(pu.Host, ":") {
		return fmt.Errorf("invalid NBD URI %q: empty port after ':'; remove the ':' or give a port", s)
	}
	if strings.Contains(host, ":") && !strings.HasPrefix(pu.Host, "[") {
		return fmt.Errorf("invalid NBD URI %q: host %q: write an IPv6 address in brackets, as [::1]:10809", s, pu.Host)
	}
	if host == "" {
		host = "localhost"
	}
	u.Host = host
	u.Port = DefaultPort
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("invalid NBD URI %q: port %q is not a number from 1 to 65535", s, port)
		}
		u.Port = p
	}
	return nil
}

func (u *URI) parsePath(s string, pu *url.URL) error {
	path := pu.Path
	if path != "" && !strings.HasPrefix(path, "/") {
		return fmt.Errorf("invalid NBD URI %q: export path %q must start with '/'", s, path)
	}
	name := strings.TrimPrefix(path, "/")
	if strings.ContainsRune(name, 0) {
		return fmt.Errorf("invalid NBD URI %q: export name contains a NUL character", s)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("invalid NBD URI %q: export name is not valid UTF-8", s)
	}
	if len(name) > proto.MaxStringLen {
		return fmt.Errorf("invalid NBD URI %q: export name is %d bytes, the limit is %d", s, len(name), proto.MaxStringLen)
	}
	u.ExportName = name
	return nil
}

func (u *URI) parseQuery(s, rawQuery string) error {
	seen := map[string]bool{}
	for _, pair := range strings.FieldsFunc(rawQuery, func(r rune) bool { return r == '&' || r == ';' }) {
		rawKey, rawValue, hasValue := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil {
			return fmt.Errorf("invalid NBD URI %q: query parameter %q: %w", s, rawKey, err)
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return fmt.Errorf("invalid NBD URI %q: value of query parameter %q: %w", s, key, err)
		}
		if !uriQueryParams[key] {
			return fmt.Errorf("invalid NBD URI %q: unknown query parameter %q; known are socket, tls-certificates, tls-psk-file, tls-verify-peer, tls-hostname, tls-type", s, key)
		}
		if seen[key] {
			return fmt.Errorf("invalid NBD URI %q: query parameter %q appears twice", s, key)
		}
		seen[key] = true
		if !hasValue || value == "" {
			return fmt.Errorf("invalid NBD URI %q: query parameter %q has no value", s, key)
		}
		if err := u.setQueryParam(s, key, value); err != nil {
			return err
		}
	}

	if u.IsUnix() && u.Socket == "" {
		return fmt.Errorf("invalid NBD URI %q: %s needs the socket query parameter; write %s:///EXPORT?socket=PATH", s, u.Scheme, u.Scheme)
	}
	return nil
}

func (u *URI) setQueryParam(s, key, value string) error {
	switch key {
	case "socket":
		if !u.IsUnix() {
			return fmt.Errorf("invalid NBD URI %q: socket is only valid with nbd+unix:// or nbds+unix://; write %s+unix:///EXPORT?socket=PATH", s, u.Scheme)
		}
		u.Socket = value
	case "tls-certificates":
		u.TLSCertificates = value
	case "tls-psk-file":
		u.TLSPSKFile = value
	case "tls-hostname":
		u.TLSHostname = value
	case "tls-verify-peer":
		var verify bool
		switch strings.ToLower(value) {
		case "1", "true", "yes", "on":
			verify = true
		case "0", "false", "no", "off":
			verify = false
		default:
			return fmt.Errorf("invalid NBD URI %q: tls-verify-peer=%q must be 0 or 1", s, value)
		}
		u.TLSVerifyPeer = &verify
	case "tls-type":
		switch value {
		case "anon", "x509", "psk":
			u.TLSType = value
		default:
			return fmt.Errorf("invalid NBD URI %q: tls-type=%q must be anon, x509 or psk", s, value)
		}
	}
	return nil
}

// String formats the URI so that ParseURI returns the same URI.
func (u *URI) String() string {
	var b strings.Builder
	b.WriteString(u.Scheme + "://")
	if u.Username != "" {
		b.WriteString(url.User(u.Username).String() + "@")
	}
	if !u.IsUnix() {
		b.WriteString(net.JoinHostPort(u.Host, strconv.Itoa(u.Port)))
	}
	b.WriteString((&url.URL{Path: "/" + u.ExportName}).EscapedPath())

	var query []string
	add := func(key, value string) {
		if value != "" {
			query = append(query, key+"="+url.QueryEscape(value))
		}
	}
	add("socket", u.Socket)
	add("tls-certificates", u.TLSCertificates)
	add("tls-psk-file", u.TLSPSKFile)
	add("tls-hostname", u.TLSHostname)
	add("tls-type", u.TLSType)
	if u.TLSVerifyPeer != nil {
		verify := "0"
		if *u.TLSVerifyPeer {
			verify = "1"
		}
		add("tls-verify-peer", verify)
	}
	if len(query) > 0 {
		b.WriteString("?" + strings.Join(query, "&"))
	}
	return b.String()
}
