// Package tlscreds turns QEMU-style TLS credentials (tls-creds-x509 and
// tls-creds-psk directories) into TLS sessions on an existing connection,
// which is what NBD_OPT_STARTTLS needs. x509 sessions use crypto/tls; PSK
// sessions use this package's own TLS 1.3 external-PSK implementation.
package tlscreds

import (
	"context"
	"net"
)

// Info describes an established TLS session for logs and authorization.
type Info struct {
	// Version is the protocol version, such as "TLS 1.3".
	Version string
	// CipherSuite is the IANA name of the negotiated suite.
	CipherSuite string
	// Identity is the PSK username, or the peer certificate's distinguished
	// name in the form QEMU's authz objects match ("CN=...,O=..."), or ""
	// when the peer presented none.
	Identity string
}

// Conn is an established TLS session.
type Conn interface {
	net.Conn
	TLSInfo() Info
}

// Server runs the server side of a TLS handshake on raw.
type Server interface {
	ServerHandshake(ctx context.Context, raw net.Conn) (Conn, error)
}

// Client runs the client side of a TLS handshake on raw. hostname is the
// name the server certificate must match (unused for PSK).
type Client interface {
	ClientHandshake(ctx context.Context, raw net.Conn, hostname string) (Conn, error)
}

// Endpoint is the role credentials are loaded for (QEMU's endpoint=
// property).
type Endpoint int

const (
	EndpointClient Endpoint = iota // QEMU's default
	EndpointServer
)

func (e Endpoint) String() string {
	if e == EndpointServer {
		return "server"
	}
	return "client"
}

// Priority is the part of a GnuTLS priority string that gonbd honours (the
// priority= property): protocol versions, cipher suites and groups, as IANA
// code points, and the %NO_TICKETS flag. A zero field keeps the default.
type Priority struct {
	MinVersion   uint16   // crypto/tls.VersionTLS12, ...
	MaxVersion   uint16   // crypto/tls.VersionTLS13, ...
	CipherSuites []uint16 // IANA cipher suite values, in preference order
	Groups       []uint16 // IANA named group values (x25519 = 29, ...)
	// NoTickets turns off session tickets (%NO_TICKETS): an x509 server
	// issues none. The PSK handshake never issues tickets.
	NoTickets bool
}
