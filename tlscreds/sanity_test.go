package tlscreds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gonbd/gonbd/tlscreds/gen"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	oidServerAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClientAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// ekuExtension builds an extended key usage extension; crypto/x509 only
// writes it non-critical, and QEMU's check depends on criticality.
func ekuExtension(t *testing.T, critical bool, oids ...asn1.ObjectIdentifier) pkix.Extension {
	t.Helper()
	der, err := asn1.Marshal(oids)
	require.NoError(t, err)
	return pkix.Extension{Id: oidExtExtendedKeyUsage, Critical: critical, Value: der}
}

// keyUsageExtension builds a key usage extension with the given
// criticality, because crypto/x509 always writes it critical.
func keyUsageExtension(t *testing.T, critical bool, usage x509.KeyUsage) pkix.Extension {
	t.Helper()
	var bits asn1.BitString
	for i := 0; i < 9; i++ {
		if usage&(1<<i) != 0 {
			bits.Bytes = append(bits.Bytes, make([]byte, i/8+1-len(bits.Bytes))...)
			bits.Bytes[i/8] |= 0x80 >> (i % 8)
			bits.BitLength = i + 1
		}
	}
	der, err := asn1.Marshal(bits)
	require.NoError(t, err)
	return pkix.Extension{Id: oidExtKeyUsage, Critical: critical, Value: der}
}

// newCAWithExtensions creates a self-signed CA whose extensions include
// extra, which replace those crypto/x509 would write.
func newCAWithExtensions(t *testing.T, commonName string, extra ...pkix.Extension) *gen.CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  true,
		ExtraExtensions:       extra,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &gen.CA{Cert: cert, Key: key}
}

// leafTemplate is a server certificate as gen issues it.
func leafTemplate() *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
}

// writeCustom signs tmpl with the CA (or itself when ca is nil) and
// writes certificate and key to dir under the given names.
func writeCustom(t *testing.T, ca *gen.CA, tmpl *x509.Certificate, dir, certName, keyName string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	parent, signer := tmpl, any(key)
	if ca != nil {
		parent, signer = ca.Cert, ca.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	keyPEM, err := gen.KeyPEM(key)
	require.NoError(t, err)
	writeFile(t, filepath.Join(dir, certName), gen.CertPEM(cert))
	if keyName != "" {
		writeFile(t, filepath.Join(dir, keyName), keyPEM)
	}
}

func TestSanityCheck(t *testing.T) {
	f := newFixture(t)
	past := time.Now().AddDate(0, 0, -2)
	other, err := gen.NewCA("other CA", gen.ValidFor(1))
	require.NoError(t, err)
	// A CA made again from the same template: same name, new key.
	regenerated, err := gen.NewCA("gonbd CA", gen.ValidFor(1))
	require.NoError(t, err)

	for _, tc := range []struct {
		name     string
		endpoint Endpoint
		setup    func(t *testing.T, dir string)
		want     string // "" means the sanity check passes
	}{
		{"GeneratedServer", EndpointServer, func(t *testing.T, dir string) {}, ""},
		{"GeneratedClient", EndpointClient, func(t *testing.T, dir string) {}, ""},
		{"CAExpired", EndpointServer, func(t *testing.T, dir string) {
			writeCustom(t, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "old CA"}, NotBefore: past, NotAfter: past.Add(time.Hour),
				BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign}, dir, FileCACert, "")
		}, "ca-cert.pem: the CA certificate has expired"},
		{"CANotMarkedCA", EndpointServer, func(t *testing.T, dir string) {
			writeCustom(t, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "not a CA"}, NotBefore: past, NotAfter: time.Now().Add(time.Hour),
				BasicConstraintsValid: true}, dir, FileCACert, "")
		}, "ca-cert.pem: the CA certificate's basic constraints do not mark it as a CA"},
		{"CAWithoutBasicConstraints", EndpointServer, func(t *testing.T, dir string) {
			writeCustom(t, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "bare"}, NotBefore: past, NotAfter: time.Now().Add(time.Hour)},
				dir, FileCACert, "")
		}, "ca-cert.pem: the CA certificate has no basic constraints extension"},
		{"CAWithoutCertSign", EndpointServer, func(t *testing.T, dir string) {
			writeCustom(t, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "no sign"}, NotBefore: past, NotAfter: time.Now().Add(time.Hour),
				BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageDigitalSignature}, dir, FileCACert, "")
		}, "ca-cert.pem: the CA certificate's key usage does not allow certificate signing"},
		{"ServerExpired", EndpointServer, func(t *testing.T, dir string) {
			tmpl := leafTemplate()
			tmpl.NotBefore, tmpl.NotAfter = past, past.Add(time.Hour)
			writeCustom(t, f.ca, tmpl, dir, FileServerCert, FileServerKey)
		}, "server-cert.pem: the server certificate has expired"},
		{"ServerNotYetValid", EndpointServer, func(t *testing.T, dir string) {
			tmpl := leafTemplate()
			tmpl.NotBefore = time.Now().Add(24 * time.Hour)
			tmpl.NotAfter = time.Now().Add(48 * time.Hour)
			writeCustom(t, f.ca, tmpl, dir, FileServerCert, FileServerKey)
		}, "server-cert.pem: the server certificate is not yet valid"},
		{"ServerIsCA", EndpointServer, func(t *testing.T, dir string) {
			tmpl := leafTemplate()
			tmpl.IsCA = true
			writeCustom(t, f.ca, tmpl, dir, FileServerCert, FileServerKey)
		}, "server-cert.pem: the certificate's basic constraints mark it as a CA"},
		{"ServerWithoutDigitalSignature", EndpointServer, func(t *testing.T, dir string) {
			tmpl := leafTemplate()
			tmpl.KeyUsage = x509.KeyUsageKeyEncipherment
			writeCustom(t, f.ca, tmpl, dir, FileServerCert, FileServerKey)
		}, "server-cert.pem: the certificate's key usage does not allow digital signatures"},
		{"ServerWithoutKeyEncipherment", EndpointServer, func(t *testing.T, dir string) {
			tmpl := leafTemplate()
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
			writeCustom(t, f.ca, tmpl, dir, FileServerCert, FileServerKey)
		}, "server-cert.pem: the certificate's key usage does not allow key encipherment"},
		{"ServerWithCriticalClientPurpose", EndpointServer, func(t *testing.T, dir string) {
			tmpl := leafTemplate()
			tmpl.ExtKeyUsage = nil
			tmpl.ExtraExtensions = []pkix.Extension{ekuExtension(t, true, oidClientAuth)}
			writeCustom(t, f.ca, tmpl, dir, FileServerCert, FileServerKey)
		}, `server-cert.pem: the certificate's key purpose does not allow use by a TLS server: add it (certtool template keyword "tls_www_server")`},
		{"ServerWithNonCriticalClientPurpose", EndpointServer, func(t *testing.T, dir string) {
			tmpl := leafTemplate()
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
			writeCustom(t, f.ca, tmpl, dir, FileServerCert, FileServerKey)
		}, ""},
		{"ClientWithCriticalServerPurpose", EndpointClient, func(t *testing.T, dir string) {
			tmpl := leafTemplate()
			tmpl.ExtKeyUsage = nil
			tmpl.ExtraExtensions = []pkix.Extension{ekuExtension(t, true, oidServerAuth)}
			writeCustom(t, f.ca, tmpl, dir, FileClientCert, FileClientKey)
		}, "client-cert.pem: the certificate's key purpose does not allow use by a TLS client"},
		{"ServerFromOtherCA", EndpointServer, func(t *testing.T, dir string) {
			writeCustom(t, other, leafTemplate(), dir, FileServerCert, FileServerKey)
		}, "server-cert.pem: the server certificate does not verify against"},
		{"ServerFromRegeneratedCA", EndpointServer, func(t *testing.T, dir string) {
			writeCustom(t, regenerated, leafTemplate(), dir, FileServerCert, FileServerKey)
		}, `names "O=gonbd,CN=gonbd CA" as its issuer, but the CA of that name in ca-cert.pem did not sign it`},
		{"CAWithNonCriticalKeyUsageWithoutCertSign", EndpointServer, func(t *testing.T, dir string) {
			ca := newCAWithExtensions(t, "no sign", keyUsageExtension(t, false, x509.KeyUsageDigitalSignature))
			writeFile(t, filepath.Join(dir, FileCACert), gen.CertPEM(ca.Cert))
			writeCustom(t, ca, leafTemplate(), dir, FileServerCert, FileServerKey)
		}, `is issued by "CN=no sign" in ca-cert.pem, whose key usage does not allow certificate signing`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, f.dir)
			tc.setup(t, dir)
			_, err := LoadX509(X509Config{Dir: dir, Endpoint: tc.endpoint, VerifyPeer: true, SanityCheck: true})
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)

			_, err = LoadX509(X509Config{Dir: dir, Endpoint: tc.endpoint, VerifyPeer: true, SanityCheck: false})
			assert.NoError(t, err, "sanity-check=off loads the same directory")
		})
	}
}

func TestSanityCheckNamesCAIndex(t *testing.T) {
	f := newFixture(t)
	dir := copyDir(t, f.dir)
	ca, err := os.ReadFile(filepath.Join(f.dir, FileCACert))
	require.NoError(t, err)
	writeCustom(t, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "second"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true}, dir, "second.pem", "")
	second, err := os.ReadFile(filepath.Join(dir, "second.pem"))
	require.NoError(t, err)
	writeFile(t, filepath.Join(dir, FileCACert), append(ca, second...))

	_, err = LoadX509(X509Config{Dir: dir, Endpoint: EndpointServer, SanityCheck: true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "ca-cert.pem (certificate 2): the CA certificate's basic constraints do not mark it as a CA")
}
