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
	"strings"
	"testing"
	"time"

	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clTLSClient runs the client side of x509 TLS with plain crypto/tls. It
// checks that the client works with any tlscreds.Client, independent of
// the tlscreds package's own x509 and PSK code.
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

// clPSK writes a psktool keys file for user in a new directory and returns
// the directory.
func clPSK(t *testing.T, user string) string {
	t.Helper()
	dir := t.TempDir()
	mustRun(t, requireTool(t, "psktool"), "-u", user, "-p", filepath.Join(dir, "keys.psk"))
	return dir
}

// clTLSCase is one TLS server setup with the URI that reaches it.
type clTLSCase struct {
	name string
	spec clServerSpec
	// query and user complete the NBD URI with credentials.
	query, user string
	// listArgs are the credentials for qemu-nbd -L.
	listArgs []string
}

func clTLSCases(t *testing.T) []clTLSCase {
	certs := clX509Dirs(t)
	psk := clPSK(t, "alice")
	return []clTLSCase{
		{
			name: "QemuNbdX509",
			spec: clServerSpec{tool: "qemu-nbd", export: "disk", args: func(t *testing.T, dir string) []string {
				return []string{"--object", "tls-creds-x509,id=tls0,endpoint=server,dir=" + certs.server,
					"--tls-creds", "tls0", "-f", "qcow2", "-x", "disk", clImage(t, dir, "qcow2", "16M")}
			}},
			query:    "tls-certificates=" + certs.client,
			listArgs: []string{"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + certs.client, "--tls-creds", "tls0"},
		},
		{
			name: "QemuNbdPSK",
			spec: clServerSpec{tool: "qemu-nbd", export: "disk", args: func(t *testing.T, dir string) []string {
				return []string{"--object", "tls-creds-psk,id=tls0,endpoint=server,dir=" + psk,
					"--tls-creds", "tls0", "-f", "raw", "-x", "disk", clImage(t, dir, "raw", "8M")}
			}},
			query:    "tls-psk-file=" + filepath.Join(psk, "keys.psk"),
			user:     "alice",
			listArgs: []string{"--object", "tls-creds-psk,id=tls0,endpoint=client,username=alice,dir=" + psk, "--tls-creds", "tls0"},
		},
		{
			name: "NbdkitPSK",
			spec: clServerSpec{tool: "nbdkit", args: func(t *testing.T, dir string) []string {
				return []string{"--tls=require", "--tls-psk=" + filepath.Join(psk, "keys.psk"), "memory", "8M"}
			}},
			query:    "tls-psk-file=" + filepath.Join(psk, "keys.psk"),
			user:     "alice",
			listArgs: []string{"--object", "tls-creds-psk,id=tls0,endpoint=client,username=alice,dir=" + psk, "--tls-creds", "tls0"},
		},
		{
			name: "NbdkitX509UnixSocket",
			spec: clServerSpec{tool: "nbdkit", unix: true, args: func(t *testing.T, dir string) []string {
				return []string{"--tls=require", "--tls-certificates=" + certs.server, "--tls-verify-peer", "memory", "8M"}
			}},
			query:    "tls-hostname=localhost&tls-certificates=" + certs.client,
			listArgs: []string{"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + certs.client, "--tls-creds", "tls0", "--tls-hostname", "localhost"},
		},
	}
}

// tlsURI turns a server's plain URI into an nbds URI with credentials.
func (c clTLSCase) tlsURI(s clServer) string {
	uri := "nbds" + strings.TrimPrefix(s.uri, "nbd")
	if c.user != "" {
		uri = strings.Replace(uri, "://", "://"+c.user+"@", 1)
	}
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	return uri + sep + c.query
}

func TestGonbdinfoMatchesNbdinfoTLS(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	gonbdinfo := bin(t, "gonbdinfo")
	for _, tc := range clTLSCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			s := clStart(t, tc.spec)
			uri := tc.tlsURI(s)
			for _, mode := range [][]string{{}, {"--json"}, {"--list"}, {"--map"}, {"--can", "tls"}} {
				args := append(append([]string{}, mode...), uri)
				want := run(t, nbdinfo, args...)
				got := run(t, gonbdinfo, args...)
				require.Equal(t, 0, want.code, "nbdinfo %v: %s", mode, want.stderr)
				assert.Equal(t, want.code, got.code, "exit code of %v; gonbdinfo stderr: %s", mode, got.stderr)
				assert.Equal(t, want.stdout, got.stdout, "output of %v", mode)
			}

			// The same credentials given as a QEMU object, with a plain
			// nbd URI.
			objURI := s.uri
			if s.network == "unix" {
				objURI += "&tls-hostname=localhost"
			}
			withObject := run(t, gonbdinfo, tc.listArgs[0], tc.listArgs[1], tc.listArgs[2], tc.listArgs[3], "--can", "tls", objURI)
			assert.Equal(t, 0, withObject.code, "gonbdinfo --object --can tls: %s", withObject.stderr)
		})
	}
}

func TestQemuListMatchesQemuNbdTLS(t *testing.T) {
	qemuNbd := requireTool(t, "qemu-nbd")
	for _, tc := range clTLSCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			s := clStart(t, tc.spec)
			want := mustRun(t, qemuNbd, append(append([]string{"-L"}, tc.listArgs...), s.listArgs...)...)

			u, err := nbd.ParseURI(tc.tlsURI(s))
			require.NoError(t, err)
			creds, err := nbd.LoadURICredentials(u, nil)
			require.NoError(t, err)
			hostname := "127.0.0.1"
			if u.IsUnix() {
				hostname = "localhost"
			}
			var got bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			require.NoError(t, nbd.ListCommand(ctx, &got, s.network, s.address, creds, hostname, nil))
			assert.Equal(t, want, got.String())
		})
	}
}

func TestClientTLSReadWrite(t *testing.T) {
	for _, tc := range clTLSCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			s := clStart(t, tc.spec)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := nbd.Dial(ctx, tc.tlsURI(s))
			require.NoError(t, err)
			defer c.Close()
			require.True(t, c.TLS())

			data := bytes.Repeat([]byte("tls!"), 256<<10)
			_, err = c.WriteAt(data, 1<<20)
			require.NoError(t, err)
			got := make([]byte, len(data))
			_, err = c.ReadAt(got, 1<<20)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(data, got), "data read back over TLS differs")
		})
	}
}

func TestClientPSKWrongKey(t *testing.T) {
	server := clPSK(t, "alice")
	client := clPSK(t, "alice")
	s := clStart(t, clServerSpec{tool: "qemu-nbd", args: func(t *testing.T, dir string) []string {
		return []string{"--object", "tls-creds-psk,id=tls0,endpoint=server,dir=" + server,
			"--tls-creds", "tls0", "-f", "raw", clImage(t, dir, "raw", "4M")}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	uri := strings.Replace("nbds"+strings.TrimPrefix(s.uri, "nbd"), "://", "://alice@", 1) + "?tls-psk-file=" + filepath.Join(client, "keys.psk")
	_, err := nbd.Dial(ctx, uri)
	assert.ErrorContains(t, err, "start TLS")
	assert.ErrorContains(t, err, "compare keys.psk on both ends")
}
