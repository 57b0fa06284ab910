// Package credobj loads the TLS credentials that a --object definition
// describes, for the commands that accept --object and --tls-creds.
package credobj

import (
	"fmt"

	"github.com/gonbd/gonbd/object"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/hashicorp/go-hclog"
)

// Creds are loaded TLS credentials, usable on either side of a handshake.
type Creds interface {
	tlscreds.Server
	tlscreds.Client
}

// Load loads the tls-creds-* object id for endpoint, reading its files.
// Errors name the object id and the file or property at fault.
func Load(reg *object.Registry, id string, endpoint tlscreds.Endpoint, log hclog.Logger) (Creds, error) {
	obj, err := reg.TLSCreds(id, endpoint.String())
	if err != nil {
		return nil, err
	}

	switch c := obj.(type) {
	case *object.TLSCredsX509:
		return loadX509(reg, c, endpoint, log)
	case *object.TLSCredsPSK:
		return loadPSK(c, endpoint, log)
	default:
		return nil, fmt.Errorf("TLS credentials %s have type %s, which gonbd cannot use: use tls-creds-x509 or tls-creds-psk", id, obj.QOMType())
	}
}

func loadX509(reg *object.Registry, c *object.TLSCredsX509, endpoint tlscreds.Endpoint, log hclog.Logger) (Creds, error) {
	prio, err := parsePriority(c.ID, c.Priority)
	if err != nil {
		return nil, err
	}

	var password []byte
	if c.PasswordID != "" {
		password, err = reg.Secret(c.PasswordID)
		if err != nil {
			return nil, fmt.Errorf("object %s property passwordid: %w", c.ID, err)
		}
	}

	creds, err := tlscreds.LoadX509(tlscreds.X509Config{
		Dir:         c.Dir,
		Endpoint:    endpoint,
		VerifyPeer:  c.VerifyPeer,
		SanityCheck: c.SanityCheck,
		KeyPassword: password,
		Priority:    prio,
		Logger:      log.Named("tls"),
	})
	if err != nil {
		return nil, fmt.Errorf("object %s: %w", c.ID, err)
	}
	return creds, nil
}

func loadPSK(c *object.TLSCredsPSK, endpoint tlscreds.Endpoint, log hclog.Logger) (Creds, error) {
	prio, err := parsePriority(c.ID, c.Priority)
	if err != nil {
		return nil, err
	}

	creds, err := tlscreds.LoadPSK(tlscreds.PSKConfig{
		Dir:      c.Dir,
		Endpoint: endpoint,
		Username: c.Username,
		Priority: prio,
		Logger:   log.Named("tls"),
	})
	if err != nil {
		return nil, fmt.Errorf("object %s: %w", c.ID, err)
	}
	return creds, nil
}

func parsePriority(id, s string) (tlscreds.Priority, error) {
	if s == "" {
		return tlscreds.Priority{}, nil
	}
	p, err := tlscreds.ParsePriority(s)
	if err != nil {
		return tlscreds.Priority{}, fmt.Errorf("object %s property priority: %w", id, err)
	}
	return p, nil
}
