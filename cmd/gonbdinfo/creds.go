package main

import (
	"fmt"
	"io"

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
		return nil, err // object.Error messages start with "--object ID"
	}
	creds, err := credobj.Load(reg, id, tlscreds.EndpointClient, logger)
	if err != nil {
		return nil, fmt.Errorf("--tls-creds %s: %w", id, err)
	}
	return creds, nil
}

// printObjectHelp prints the help that an --object help or TYPE,help
// argument requests, as qemu-nbd does, and reports whether there was one.
func printObjectHelp(w io.Writer, objects []string) bool {
	for _, spec := range objects {
		if object.PrintHelp(w, spec) {
			return true
		}
	}
	return false
}
