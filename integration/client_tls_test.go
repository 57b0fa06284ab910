package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clTLSClient runs the client side of x509 TLS with crypto/tls. It replaces
// tlscreds.LoadX509 so the client's STARTTLS path is tested against
// qemu-nbd and nbdkit before the x509 credentials package exists.
// TODO: switch to tlscreds.LoadX509 once it is in main.
type clTLSClient struct{ config *tls.Config }

func (c clTLSClient) ClientHandshake(ctx context.Context, raw net.Conn, hostname string) (tlscreds.Conn, error) {
	cfg := c.config.Clone()
	cfg.ServerName = hostname
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return clTLSConn{conn}, nil
}

type clTLSConn struct{ *tls.Conn }

func (c clTLSConn) TLSInfo() tlscreds.Info {
	st := c.ConnectionState()
	return tlscreds.Info{Version: tls.VersionName(st.Version), CipherSuite: tls.CipherSuiteName(st.CipherSuite)}
}

// clX509 holds QEMU-layout credential directories signed by one CA.
type clX509 struct {
	server, client string
	tls            clTLSClient
}

// clX509Dirs writes a CA, a server certificate for localhost and
// 127.0.0.1, and a client certificate, in the file names QEMU's
// tls-creds-x509 and nbdkit --tls-certificates read.
func clX509Dirs(t *testing.T) clX509 {
	t.Helper()
	dir := t.TempDir()
	out := clX509{server: filepath.Join(dir, "server"), client: filepath.Join(dir, "client")}
	require.NoError(t, os.Mkdir(out.server, 0o700))
	require.NoError(t, os.Mkdir(out.client, 0o700))

	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "gonbd test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})

	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, dir, prefix string) tls.Certificate {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		require.NoError(t, err)
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(serial),
			Subject:               pkix.Name{CommonName: cn, Organization: []string{"gonbd"}},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:           []x509.ExtKeyUsage{usage},
			DNSNames:              []string{"localhost"},
			IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		require.NoError(t, err)
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		require.NoError(t, err)
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
		require.NoError(t, os.WriteFile(filepath.Join(dir, "ca-cert.pem"), caPEM, 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(dir, prefix+"-cert.pem"), certPEM, 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(dir, prefix+"-key.pem"), keyPEM, 0o600))
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		require.NoError(t, err)
		return pair
	}
	leaf(2, "localhost", x509.ExtKeyUsageServerAuth, out.server, "server")
	clientPair := leaf(3, "gonbd-client", x509.ExtKeyUsageClientAuth, out.client, "client")

	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	out.tls = clTLSClient{config: &tls.Config{
		RootCAs:      roots,
		Certificates: []tls.Certificate{clientPair},
		MinVersion:   tls.VersionTLS12,
	}}
	return out
}

func TestClientX509(t *testing.T) {
	certs := clX509Dirs(t)
	servers := []clServerSpec{
		{name: "QemuNbd", tool: "qemu-nbd", export: "disk", args: func(t *testing.T, dir string) []string {
			return []string{"--object", "tls-creds-x509,id=tls0,endpoint=server,dir=" + certs.server,
				"--tls-creds", "tls0", "-f", "raw", "-x", "disk", clImage(t, dir, "raw", "8M")}
		}},
		{name: "QemuNbdUnixSocket", tool: "qemu-nbd", unix: true, args: func(t *testing.T, dir string) []string {
			return []string{"--object", "tls-creds-x509,id=tls0,endpoint=server,dir=" + certs.server,
				"--tls-creds", "tls0", "-f", "raw", clImage(t, dir, "raw", "8M")}
		}},
		{name: "Nbdkit", tool: "nbdkit", args: func(t *testing.T, dir string) []string {
			return []string{"--tls=require", "--tls-certificates=" + certs.server, "--tls-verify-peer",
				"file", clImage(t, dir, "raw", "8M")}
		}},
	}
	for _, spec := range servers {
		t.Run(spec.name, func(t *testing.T) {
			s := clStart(t, spec)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := nbd.Dial(ctx, s.uri, nbd.WithTLS(certs.tls), nbd.WithTLSHostname("localhost"))
			require.NoError(t, err)
			defer c.Close()
			assert.True(t, c.TLS())

			buf := make([]byte, 1<<20)
			_, err = c.ReadAt(buf, 0)
			require.NoError(t, err)
			assert.Equal(t, bytes.Repeat([]byte{0x55}, 1<<20), buf)
			data := bytes.Repeat([]byte{0xaa}, 64<<10)
			_, err = c.WriteAt(data, 2<<20)
			require.NoError(t, err)
			_, err = c.ReadAt(buf[:len(data)], 2<<20)
			require.NoError(t, err)
			assert.Equal(t, data, buf[:len(data)])
		})
	}
}

func TestQemuListMatchesQemuNbdX509(t *testing.T) {
	certs := clX509Dirs(t)
	s := clStart(t, clServerSpec{tool: "qemu-nbd", export: "disk", args: func(t *testing.T, dir string) []string {
		return []string{"--object", "tls-creds-x509,id=tls0,endpoint=server,dir=" + certs.server,
			"--tls-creds", "tls0", "-f", "qcow2", "-x", "disk", "-D", "over TLS", clImage(t, dir, "qcow2", "16M")}
	}})
	want := mustRun(t, requireTool(t, "qemu-nbd"), append([]string{"-L",
		"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + certs.client,
		"--tls-creds", "tls0", "--tls-hostname", "localhost"}, s.listArgs...)...)

	var got bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, nbd.ListCommand(ctx, &got, s.network, s.address, certs.tls, "localhost", nil))
	assert.Equal(t, want, got.String())

	// Without credentials the listing fails with advice.
	err := nbd.ListCommand(ctx, &got, s.network, s.address, nil, "", nil)
	assert.ErrorContains(t, err, "requires TLS")
}
