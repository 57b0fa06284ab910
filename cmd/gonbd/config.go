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
// credentials. The object and tlscreds packages replace it; until then
// gonbd rejects those flags rather than serve without the TLS a user asked
// for.
var buildTLS = func(o *options, log hclog.Logger) (tlsSetup, error) {
	if len(o.objects) > 0 {
		return tlsSetup{}, usageErrorf("--object %q: objects are not implemented yet in this build", o.objects[0])
	}
	if o.tlsCreds != "" {
		return tlsSetup{}, usageErrorf("--tls-creds %s: TLS is not implemented yet in this build", o.tlsCreds)
	}
	return tlsSetup{mode: nbd.TLSOff}, nil
}

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
		Logger:         log,
	}
}
