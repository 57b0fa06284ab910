package tlscreds

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// verifyPeerChain checks the certificates a peer sent as QEMU does with
// verify-peer=on: the chain must lead to a CA in ca-cert.pem, every
// certificate must be valid now and not revoked by ca-crl.pem, and a
// server certificate must match hostname. The key purpose of the peer
// certificate is not checked, as GnuTLS's gnutls_certificate_verify_peers2
// (which QEMU calls) does not check it either. Its key usage, when the
// certificate has one, must allow digital signatures: with the ECDHE and
// TLS 1.3 suites gonbd offers, the peer signs the handshake, and GnuTLS
// 3.7.9 peers fail such a handshake with a key usage violation.
func (x *X509) verifyPeerChain(certs []*x509.Certificate, role, hostname string) error {
	if len(certs) == 0 {
		return fmt.Errorf("tls-creds-x509: the %s sent no certificate", role)
	}
	leaf := certs[0]
	name := describeCert(leaf)

	intermediates := x509.NewCertPool()
	for _, c := range certs[1:] {
		intermediates.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         x.roots,
		Intermediates: intermediates,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("tls-creds-x509: %s certificate %s: %s", role, name, explainVerifyError(err, x.caCerts))
	}

	if err := x.checkRevoked(chains[0], role); err != nil {
		return err
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Errorf("tls-creds-x509: %s certificate %s: its key usage does not allow digital signatures: issue one with digitalSignature (certtool's signing_key)",
			role, name)
	}

	if hostname != "" && !matchCertHostname(leaf, hostname) {
		return fmt.Errorf("tls-creds-x509: server certificate %s does not match host name %q (names in it: %s): connect with one of those names, or issue the certificate with this one (certtool template keyword \"dns_name\" or \"ip_address\")",
			name, hostname, certNames(leaf))
	}
	return nil
}

// explainVerifyError turns an x509 verification error into a reason a
// user can act on. caCerts are the certificates in ca-cert.pem.
func explainVerifyError(err error, caCerts []*x509.Certificate) string {
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) {
		c := invalid.Cert
		switch invalid.Reason {
		case x509.Expired:
			now := time.Now()
			if now.Before(c.NotBefore) {
				return fmt.Sprintf("is not yet valid (valid from %s)", c.NotBefore.UTC().Format(time.RFC3339))
			}
			return fmt.Sprintf("has expired (valid until %s)", c.NotAfter.UTC().Format(time.RFC3339))
		case x509.NotAuthorizedToSign:
			return fmt.Sprintf("is issued by %s, which is not a CA", describeCert(c))
		}
		return err.Error()
	}
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		return explainUnknownIssuer(unknown.Cert, caCerts)
	}
	return err.Error()
}

// explainUnknownIssuer explains why c does not chain to a CA in caCerts.
// When a CA there has the name of c's issuer, the reason names what else
// is wrong, because the user sees that name in ca-cert.pem.
func explainUnknownIssuer(c *x509.Certificate, caCerts []*x509.Certificate) string {
	for _, ca := range caCerts {
		if !bytes.Equal(ca.RawSubject, c.RawIssuer) {
			continue
		}
		if ca.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) != nil {
			// Running certtool --generate-self-signed again with the
			// same template makes a CA with the same name and a new key.
			return fmt.Sprintf("names %s as its issuer, but the CA of that name in %s did not sign it (a CA made again keeps its name but has a new key): use the ca-cert.pem of the CA that issued it, or issue the certificate again",
				describeCert(ca), FileCACert)
		}
		if ca.KeyUsage != 0 && ca.KeyUsage&x509.KeyUsageCertSign == 0 {
			return fmt.Sprintf("is issued by %s in %s, whose key usage does not allow certificate signing: issue the CA again with keyCertSign (certtool template keyword \"cert_signing_key\")",
				describeCert(ca), FileCACert)
		}
	}
	return fmt.Sprintf("is not issued by a CA in %s (issuer %s)", FileCACert, c.Issuer)
}

// checkRevoked fails if ca-crl.pem revokes any certificate in chain.
func (x *X509) checkRevoked(chain []*x509.Certificate, role string) error {
	for _, crl := range x.crls {
		for _, c := range chain {
			if !sameIssuer(crl, c) {
				continue
			}
			for _, entry := range crl.RevokedCertificateEntries {
				if entry.SerialNumber.Cmp(c.SerialNumber) == 0 {
					return fmt.Errorf("tls-creds-x509: %s certificate %s (serial %s) is revoked by %s",
						role, describeCert(c), c.SerialNumber.Text(16), x.crlPath)
				}
			}
		}
	}
	return nil
}

func sameIssuer(crl *x509.RevocationList, c *x509.Certificate) bool {
	return string(crl.RawIssuer) == string(c.RawIssuer)
}

func describeCert(c *x509.Certificate) string {
	if dn, err := FormatDN(c.RawSubject); err == nil && dn != "" {
		return fmt.Sprintf("%q", dn)
	}
	return fmt.Sprintf("with serial %s", c.SerialNumber.Text(16))
}

func certNames(c *x509.Certificate) string {
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if cnIsHostName(c) && c.Subject.CommonName != "" {
		names = append(names, "CN "+c.Subject.CommonName)
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// matchCertHostname matches hostname against a server certificate as
// GnuTLS 3.7's gnutls_x509_crt_check_hostname does, because QEMU clients
// accept what it accepts. An IP address matches only an iPAddress name,
// never a dNSName or CN that spells it (checked against GnuTLS 3.7.9's
// gnutls_x509_crt_check_hostname, the version Debian 12's QEMU 7.2 and
// libnbd 1.14 use). A dNSName matches with a
// wildcard allowed only at the start of the first label. The subject CN
// is used only when cnIsHostName allows it and the subject has exactly
// one CN.
// NOTE: GnuTLS first maps an internationalized host name to its IDNA
// (xn--) form; gonbd compares the name as given.
func matchCertHostname(c *x509.Certificate, hostname string) bool {
	if ip := net.ParseIP(hostname); ip != nil {
		for _, certIP := range c.IPAddresses {
			if certIP.Equal(ip) {
				return true
			}
		}
		return false
	}

	for _, name := range c.DNSNames {
		if matchHostnamePattern(name, hostname) {
			return true
		}
	}
	if !cnIsHostName(c) {
		return false
	}
	var cns []string
	for _, attr := range c.Subject.Names {
		if attr.Type.Equal(oidCommonName) {
			if s, ok := attr.Value.(string); ok {
				cns = append(cns, s)
			}
		}
	}
	return len(cns) == 1 && matchHostnamePattern(cns[0], hostname)
}

// cnIsHostName reports whether a certificate's subject CN may serve as
// its host name: only without dNSName, iPAddress and URI names, which make
// GnuTLS 3.7.9 skip the CN, and with a key purpose that allows a TLS server.
func cnIsHostName(c *x509.Certificate) bool {
	hasSANName := len(c.DNSNames) > 0 || len(c.IPAddresses) > 0 || len(c.URIs) > 0
	return !hasSANName && allowsServerPurpose(c)
}

// allowsServerPurpose reports whether a certificate without extended key
// usage, or with serverAuth or anyExtendedKeyUsage, may serve TLS.
func allowsServerPurpose(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// matchHostnamePattern compares a certificate name with a host name,
// ignoring ASCII case. A leading "*" matches any run of characters within
// the first label, and only if the pattern has at least two more labels
// (so "*.com" matches nothing). Names with non-printable bytes must match
// exactly.
func matchHostnamePattern(pattern, hostname string) bool {
	if !isPrintableASCII([]byte(pattern)) {
		return pattern == hostname
	}
	if !strings.HasPrefix(pattern, "*") {
		return strings.EqualFold(pattern, hostname)
	}

	last := strings.LastIndexByte(pattern, '.')
	if last < 0 || strings.IndexByte(pattern, '.') == last || last == len(pattern)-1 {
		return false
	}
	suffix := pattern[1:]
	for i := 0; i <= len(hostname); i++ {
		if strings.EqualFold(suffix, hostname[i:]) {
			return true
		}
		if i == len(hostname) || hostname[i] == '.' {
			break
		}
	}
	return false
}
