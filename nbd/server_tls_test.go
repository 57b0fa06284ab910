package nbd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gonbd/gonbd/tlscreds"
	"github.com/stretchr/testify/require"
)

// testTLSServer adapts crypto/tls to tlscreds.Server for the tests; the
// real x509 and PSK credentials live in package tlscreds.
type testTLSServer struct{ config *tls.Config }

type testTLSConn struct{ *tls.Conn }

func (c testTLSConn) TLSInfo() tlscreds.Info {
	st := c.ConnectionState()
	info := tlscreds.Info{Version: tls.VersionName(st.Version), CipherSuite: tls.CipherSuiteName(st.CipherSuite)}
	if len(st.PeerCertificates) > 0 {
		info.Identity = st.PeerCertificates[0].Subject.String()
	}
	return info
}

func (s testTLSServer) ServerHandshake(ctx context.Context, raw net.Conn) (tlscreds.Conn, error) {
	c := tls.Server(raw, s.config)
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return testTLSConn{c}, nil
}

// testPKI is a CA and a server certificate for 127.0.0.1 and localhost,
// plus a client certificate, generated once per test binary.
type testPKI struct {
	caPEM      []byte
	serverCert tls.Certificate
	clientCert tls.Certificate
	serverPEM  []byte
	serverKey  []byte
	pool       *x509.CertPool
}

var (
	pkiOnce sync.Once
	pki     *testPKI
	pkiErr  error
)

func getTestPKI(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() { pki, pkiErr = newTestPKI() })
	require.NoError(t, pkiErr)
	return pki
}

func newTestPKI() (*testPKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "gonbd test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}

	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) (tls.Certificate, []byte, []byte, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn, Organization: []string{"gonbd"}},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, nil, nil, err
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return tls.Certificate{}, nil, nil, err
		}
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		return cert, certPEM, keyPEM, err
	}

	p := &testPKI{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	if p.serverCert, p.serverPEM, p.serverKey, err = issue(2, "localhost", x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	if p.clientCert, _, _, err = issue(3, "client", x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	return p, nil
}

// tlsServer returns server credentials. With clientAuth the server
// requests and verifies a client certificate.
func (p *testPKI) tlsServer(clientAuth bool) testTLSServer {
	cfg := &tls.Config{Certificates: []tls.Certificate{p.serverCert}, MinVersion: tls.VersionTLS12}
	if clientAuth {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = p.pool
	}
	return testTLSServer{config: cfg}
}

func (p *testPKI) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: p.pool, ServerName: "localhost", Certificates: []tls.Certificate{p.clientCert}}
}

// writeClientDir writes ca-cert.pem into a directory that serves as
// libnbd's tls-certificates and QEMU's tls-creds-x509 dir for a client
// without a certificate of its own.
func (p *testPKI) writeClientDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca-cert.pem"), p.caPEM, 0o600))
	return dir
}
