package tlscreds

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"time"
)

var (
	oidExtKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtExtendedKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}
)

// sanityCheck checks the credentials at load time with the rules of
// QEMU's tls-creds-x509 sanity-check=on (crypto/tlscredsx509.c): every CA
// certificate is valid now and marked as a CA; the endpoint's certificate
// is valid now, is not a CA, has a key usage and key purpose that allow
// its role, and is issued by the CA. As in QEMU, a key usage or key
// purpose that lacks the role only fails when its extension is critical.
// cert is nil for a client without a certificate.
func sanityCheck(endpoint Endpoint, caPath string, caCerts []*x509.Certificate, certPath string, cert *tls.Certificate) error {
	now := time.Now()
	for i, ca := range caCerts {
		where := caPath
		if len(caCerts) > 1 {
			where = fmt.Sprintf("%s (certificate %d)", caPath, i+1)
		}
		if err := checkValidity(ca, "CA", where, now); err != nil {
			return err
		}
		if err := checkCA(ca, where); err != nil {
			return err
		}
	}
	if cert == nil {
		return nil
	}

	leaf := cert.Leaf
	role := endpoint.String()
	if err := checkValidity(leaf, role, certPath, now); err != nil {
		return err
	}
	if leaf.BasicConstraintsValid && leaf.IsCA {
		return fmt.Errorf("sanity check: %s: the certificate's basic constraints mark it as a CA, but it is used as the %s certificate: issue a certificate without the CA flag",
			certPath, role)
	}
	if err := checkKeyUsage(leaf, certPath); err != nil {
		return err
	}
	if err := checkKeyPurpose(leaf, endpoint, certPath); err != nil {
		return err
	}
	return checkIssuedByCA(cert, caCerts, caPath, certPath, role, now)
}

func checkValidity(c *x509.Certificate, role, path string, now time.Time) error {
	if now.After(c.NotAfter) {
		return fmt.Errorf("sanity check: %s: the %s certificate has expired (valid until %s): issue a new one",
			path, role, c.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(c.NotBefore) {
		return fmt.Errorf("sanity check: %s: the %s certificate is not yet valid (valid from %s): check the clock or the certificate",
			path, role, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

func checkCA(ca *x509.Certificate, path string) error {
	if !ca.BasicConstraintsValid {
		return fmt.Errorf("sanity check: %s: the CA certificate has no basic constraints extension: issue it as a CA (certtool template keyword \"ca\")", path)
	}
	if !ca.IsCA {
		return fmt.Errorf("sanity check: %s: the CA certificate's basic constraints do not mark it as a CA: issue it as a CA (certtool template keyword \"ca\")", path)
	}
	if ca.KeyUsage != 0 && ca.KeyUsage&x509.KeyUsageCertSign == 0 && extensionCritical(ca, oidExtKeyUsage) {
		return fmt.Errorf("sanity check: %s: the CA certificate's key usage does not allow certificate signing (keyCertSign): add it (certtool template keyword \"cert_signing_key\")", path)
	}
	return nil
}

// checkKeyUsage requires digitalSignature and keyEncipherment when a
// critical key usage extension is present, as QEMU does.
func checkKeyUsage(c *x509.Certificate, path string) error {
	if c.KeyUsage == 0 || !extensionCritical(c, oidExtKeyUsage) {
		return nil
	}
	if c.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Errorf("sanity check: %s: the certificate's key usage does not allow digital signatures (digitalSignature): add it (certtool template keyword \"signing_key\")", path)
	}
	if c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		return fmt.Errorf("sanity check: %s: the certificate's key usage does not allow key encipherment (keyEncipherment): add it (certtool template keyword \"encryption_key\")", path)
	}
	return nil
}

// checkKeyPurpose requires serverAuth (server) or clientAuth (client) when
// a critical extended key usage extension is present, as QEMU does.
func checkKeyPurpose(c *x509.Certificate, endpoint Endpoint, path string) error {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return nil
	}
	want, keyword := x509.ExtKeyUsageClientAuth, "tls_www_client"
	if endpoint == EndpointServer {
		want, keyword = x509.ExtKeyUsageServerAuth, "tls_www_server"
	}
	for _, u := range c.ExtKeyUsage {
		if u == want || u == x509.ExtKeyUsageAny {
			return nil
		}
	}
	if !extensionCritical(c, oidExtExtendedKeyUsage) {
		return nil
	}
	return fmt.Errorf("sanity check: %s: the certificate's key purpose does not allow use by a TLS %s: add it (certtool template keyword %q)",
		path, endpoint, keyword)
}

// checkIssuedByCA verifies the endpoint's chain against the CA file.
func checkIssuedByCA(cert *tls.Certificate, caCerts []*x509.Certificate, caPath, certPath, role string, now time.Time) error {
	roots := x509.NewCertPool()
	for _, ca := range caCerts {
		roots.AddCert(ca)
	}
	intermediates := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("sanity check: %s: %w", certPath, err)
		}
		intermediates.AddCert(c)
	}
	_, err := cert.Leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("sanity check: %s: the %s certificate does not verify against %s: %s",
			certPath, role, caPath, explainVerifyError(err, caCerts))
	}
	return nil
}

func extensionCritical(c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	for _, ext := range c.Extensions {
		if ext.Id.Equal(oid) {
			return ext.Critical
		}
	}
	return false
}
