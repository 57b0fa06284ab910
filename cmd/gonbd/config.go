package main

import (
	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/hashicorp/go-hclog"
)

// tlsSetup is the TLS part of a server configuration.
type tlsSetup struct {
	server tlscreds.Server
	mode   nbd.TLSMode
	authz  nbd.Authorizer
}

// buildTLS turns --object, --tls-creds, --tls-authz and --tls into TLS
// credentials; see tls.go.
var buildTLS = buildTLSFromObjects

// tlsMode maps --tls to the server's mode. With --tls-creds and no --tls,
// TLS is required, as qemu-nbd always does.
func tlsMode(o *options) nbd.TLSMode {
	switch {
	case o.tlsCreds == "" || o.tls == "off":
		return nbd.TLSOff
	case o.tls == "on":
		return nbd.TLSOptional
	}
	return nbd.TLSRequire
}

// maxInFlight caps requests in flight per connection, as qemu-nbd 7.2 does
// with MAX_NBD_REQUESTS (16) in nbd/server.c. With the server's default of
// 64, gonbd's peak RSS in make bench was about twice qemu-nbd's, and MB/s
// did not rise.
const maxInFlight = 16

// serverConfig builds the server configuration from parsed flags, an open
// backend and the TLS setup.
func serverConfig(o *options, b export.Backend, tls tlsSetup, log hclog.Logger) nbd.ServerConfig {
	return nbd.ServerConfig{
		Exports: []*nbd.Export{{
			Name:            o.exportName,
			Description:     o.description,
			Backend:         b,
			ReadOnly:        o.readOnly,
			AllocationDepth: o.allocationDepth,
		}},
		TLS:            tls.server,
		TLSMode:        tls.mode,
		Authz:          tls.authz,
		HandshakeLimit: o.handshakeLimit,
		MaxConnections: o.shared,
		Persistent:     o.persistent,
		MaxInFlight:    maxInFlight,
		Logger:         log,
	}
}
