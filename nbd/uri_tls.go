package nbd

import (
	"fmt"
	"os/user"

	"github.com/gonbd/gonbd/tlscreds"
	"github.com/hashicorp/go-hclog"
)

// URICredentialsLoader builds client TLS credentials from the TLS
// parameters of an NBD URI. It returns nil credentials, and no error, when
// the URI names none.
type URICredentialsLoader func(u *URI, logger hclog.Logger) (tlscreds.Client, error)

// LoadURICredentials is the default URICredentialsLoader: tls-certificates
// names an x509 directory (ca-cert.pem, client-cert.pem, client-key.pem)
// and tls-psk-file a psktool keys file whose user is the URI's user part
// (default: the local user name, as the NBD URI specification and libnbd
// do).
func LoadURICredentials(u *URI, logger hclog.Logger) (tlscreds.Client, error) {
	if u.TLSCertificates == "" && u.TLSPSKFile == "" {
		return nil, nil
	}
	if u.TLSCertificates != "" && u.TLSPSKFile != "" {
		return nil, fmt.Errorf("NBD URI names both tls-certificates and tls-psk-file; keep one")
	}
	if u.TLSType == "anon" {
		return nil, fmt.Errorf("NBD URI has tls-type=anon together with credentials; anonymous TLS is not supported")
	}
	if u.TLSCertificates != "" {
		if u.TLSType == "psk" {
			return nil, fmt.Errorf("NBD URI has tls-type=psk but names tls-certificates; use tls-psk-file")
		}
		// libnbd does no QEMU-style sanity check of URI credentials, so
		// neither does this.
		creds, err := tlscreds.LoadX509(tlscreds.X509Config{
			Dir:        u.TLSCertificates,
			Endpoint:   tlscreds.EndpointClient,
			VerifyPeer: u.TLSVerifyPeer == nil || *u.TLSVerifyPeer,
			Logger:     logger,
		})
		if err != nil {
			return nil, fmt.Errorf("NBD URI tls-certificates=%s: %w", u.TLSCertificates, err)
		}
		return creds, nil
	}
	if u.TLSType == "x509" {
		return nil, fmt.Errorf("NBD URI has tls-type=x509 but names tls-psk-file; use tls-certificates")
	}
	creds, err := tlscreds.LoadPSK(tlscreds.PSKConfig{
		KeysFile: u.TLSPSKFile,
		Endpoint: tlscreds.EndpointClient,
		Username: pskUsername(u),
		Logger:   logger,
	})
	if err != nil {
		return nil, fmt.Errorf("NBD URI tls-psk-file=%s: %w", u.TLSPSKFile, err)
	}
	return creds, nil
}

// pskUsername returns the PSK identity for u: its user part, else the
// local user name, else "qemu" (the default of QEMU's tls-creds-psk).
func pskUsername(u *URI) string {
	if u.Username != "" {
		return u.Username
	}
	if cur, err := user.Current(); err == nil && cur.Username != "" {
		return cur.Username
	}
	return "qemu"
}
