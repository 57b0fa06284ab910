package tlscreds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/gonbd/gonbd/tlscreds/gen"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeClientWithKeyUsage issues a client certificate with key usage ku
// from ca and writes it with its key into dir.
func writeClientWithKeyUsage(t *testing.T, ca *gen.CA, ku x509.KeyUsage, dir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "signer"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     ku,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	keyPEM, err := gen.KeyPEM(key)
	require.NoError(t, err)
	writeFile(t, filepath.Join(dir, FileClientCert), gen.CertPEM(cert))
	writeFile(t, filepath.Join(dir, FileClientKey), keyPEM)
}

// TestX509ClientCertKeyUsage checks the key usage of client certificates.
// A client signs its TLS 1.3 CertificateVerify with its key, and GnuTLS
// 3.7.9 servers (qemu-nbd 7.2) reject the handshake when the certificate
// has a key usage extension without digitalSignature; gonbd must too.
func TestX509ClientCertKeyUsage(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name    string
		usage   x509.KeyUsage
		wantErr bool
	}{
		{"DigitalSignature", x509.KeyUsageDigitalSignature, false},
		{"CertSignOnly", x509.KeyUsageCertSign, true},
		{"KeyEnciphermentOnly", x509.KeyUsageKeyEncipherment, true},
		{"NoKeyUsage", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, f.dir)
			writeClientWithKeyUsage(t, f.ca, tc.usage, dir)
			cli, err := LoadX509(X509Config{Dir: dir, Endpoint: EndpointClient, VerifyPeer: true, SanityCheck: false})
			require.NoError(t, err)

			server, client := handshake(t, loadServer(t, f.dir, true), cli, "localhost")
			if !tc.wantErr {
				require.NoError(t, server.err)
				assert.NoError(t, client.err)
				return
			}
			require.Error(t, server.err)
			assert.Contains(t, server.err.Error(), `client certificate "CN=signer": its key usage does not allow digital signatures`)
			assert.Error(t, client.err)
		})
	}
}
