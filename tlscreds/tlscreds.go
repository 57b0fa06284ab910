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
