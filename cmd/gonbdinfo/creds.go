package main

import (
	"github.com/gonbd/gonbd/internal/credobj"
	"github.com/gonbd/gonbd/object"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/hashicorp/go-hclog"
)

// tlsCredsFromObjects loads the client credentials of the --object
// definition whose id is id (tls-creds-x509 or tls-creds-psk with
// endpoint=client).
func tlsCredsFromObjects(objects []string, id string, logger hclog.Logger) (tlscreds.Client, error) {
	reg, err := object.ParseAll(objects)
	if err != nil {
		return nil, err
	}
	return credobj.Load(reg, id, tlscreds.EndpointClient, logger)
}
