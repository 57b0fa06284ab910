package main

import (
	"fmt"

	"github.com/gonbd/gonbd/internal/credobj"
	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/object"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/hashicorp/go-hclog"
)

// parseObjects creates the --object definitions in command-line order.
// Like qemu-nbd, it checks credential files now, before any socket opens.
func parseObjects(o *options) (*object.Registry, error) {
	reg, err := object.ParseAll(o.objects)
	if err != nil {
		// object.Error messages start with "--object ID".
		return nil, usageErrorf("%v", err)
	}
	return reg, nil
}

// buildTLSFromObjects loads the server credentials named by --tls-creds and
// the authorization object named by --tls-authz.
func buildTLSFromObjects(o *options, log hclog.Logger) (tlsSetup, error) {
	reg, err := parseObjects(o)
	if err != nil {
		return tlsSetup{}, err
	}
	if o.tlsCreds == "" {
		if o.tlsAuthz != "" {
			return tlsSetup{}, usageErrorf("--tls-authz %s needs --tls-creds: authorization applies to TLS clients only", o.tlsAuthz)
		}
		return tlsSetup{mode: nbd.TLSOff}, nil
	}

	creds, err := credobj.Load(reg, o.tlsCreds, tlscreds.EndpointServer, log)
	if err != nil {
		return tlsSetup{}, usageErrorf("--tls-creds %s: %v", o.tlsCreds, err)
	}
	setup := tlsSetup{server: creds, mode: tlsMode(o)}

	if o.tlsAuthz != "" {
		authz, err := reg.Authz(o.tlsAuthz)
		if err != nil {
			return tlsSetup{}, usageErrorf("--tls-authz %s: %v", o.tlsAuthz, err)
		}
		setup.authz = authz
	}
	return setup, nil
}

// clientCreds loads the client credentials for -L, or returns nil without
// --tls-creds.
func clientCreds(o *options, log hclog.Logger) (tlscreds.Client, error) {
	reg, err := parseObjects(o)
	if err != nil {
		return nil, err
	}
	if o.tlsCreds == "" {
		return nil, nil
	}
	creds, err := credobj.Load(reg, o.tlsCreds, tlscreds.EndpointClient, log)
	if err != nil {
		return nil, fmt.Errorf("--tls-creds %s: %w", o.tlsCreds, err)
	}
	return creds, nil
}
