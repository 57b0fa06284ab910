package main

import (
	"errors"

	"github.com/gonbd/gonbd/tlscreds"
	"github.com/hashicorp/go-hclog"
)

// tlsCredsFromObjects builds the client credentials of the --object
// definition whose id is id.
//
// TODO: resolve the objects with the object package (QEMU's
// tls-creds-x509 and tls-creds-psk with endpoint=client) once it is in
// main.
var tlsCredsFromObjects = func(objects []string, id string, logger hclog.Logger) (tlscreds.Client, error) {
	return nil, errors.New("this build cannot read --object definitions yet; put the credentials in the URI with tls-certificates=DIR or tls-psk-file=FILE")
}
