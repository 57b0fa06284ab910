package tlscreds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gonbd/gonbd/internal/testenv"
	"github.com/gonbd/gonbd/tlscreds/gen"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// needTool returns the path of a peer tool, failing the test under CI=true
// and skipping it otherwise when the tool is missing.
var needTool = testenv.RequireTool

// fixture is a CA with a server and client certificate, written to one
// directory as gonbd-creds writes it.
type fixture struct {
	dir    string
	ca     *gen.CA
	server *x509.Certificate
	client *x509.Certificate
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, gen.X509(gen.X509Options{Dir: dir, Hostnames: []string{"localhost"},
		IPs: []net.IP{net.ParseIP("127.0.0.1")}, ClientName: "client.example.com"}))
	f := &fixture{dir: dir}
	caCerts, err := loadCertificates(filepath.Join(dir, FileCACert))
	require.NoError(t, err)
	caKey, err := loadPrivateKey(filepath.Join(dir, "ca-key.pem"), nil)
	require.NoError(t, err)
	f.ca = &gen.CA{Cert: caCerts[0], Key: caKey}
	srv, err := loadCertificates(filepath.Join(dir, FileServerCert))
	require.NoError(t, err)
	cli, err := loadCertificates(filepath.Join(dir, FileClientCert))
	require.NoError(t, err)
	f.server, f.client = srv[0], cli[0]
	return f
}

// writeLeaf issues a certificate from ca and writes it with its key under
// the given file names in dir.
func writeLeaf(t *testing.T, ca *gen.CA, l gen.Leaf, dir, certName, keyName string) *x509.Certificate {
	t.Helper()
	cert, key, err := ca.Issue(l)
	require.NoError(t, err)
	keyPEM, err := gen.KeyPEM(key)
	require.NoError(t, err)
	writeFile(t, filepath.Join(dir, certName), gen.CertPEM(cert))
	writeFile(t, filepath.Join(dir, keyName), keyPEM)
	return cert
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, data, 0o600))
}

// copyDir copies the regular files of src to a new temporary directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		require.NoError(t, err)
		writeFile(t, filepath.Join(dst, e.Name()), data)
	}
	return dst
}

func loadServer(t *testing.T, dir string, verify bool) *X509 {
	t.Helper()
	x, err := LoadX509(X509Config{Dir: dir, Endpoint: EndpointServer, VerifyPeer: verify, SanityCheck: true})
	require.NoError(t, err)
	return x
}

func loadClient(t *testing.T, dir string, verify bool) *X509 {
	t.Helper()
	x, err := LoadX509(X509Config{Dir: dir, Endpoint: EndpointClient, VerifyPeer: verify, SanityCheck: true})
	require.NoError(t, err)
	return x
}

// handshakeResult is one side of a loopback handshake.
type handshakeResult struct {
	conn Conn
	err  error
}

// handshake runs srv and cli against each other over loopback TCP and,
// when both succeed, checks that data flows both ways.
func handshake(t *testing.T, srv Server, cli Client, hostname string) (server, client handshakeResult) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	done := make(chan handshakeResult, 1)
	go func() {
		raw, err := l.Accept()
		if err != nil {
			done <- handshakeResult{err: err}
			return
		}
		c, err := srv.ServerHandshake(ctx, raw)
		if err != nil {
			raw.Close()
			done <- handshakeResult{err: err}
			return
		}
		// Echo one message so that a TLS 1.3 client learns whether the
		// server accepted its certificate.
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			c.Close()
			done <- handshakeResult{err: err}
			return
		}
		_, err = c.Write(buf)
		done <- handshakeResult{conn: c, err: err}
	}()

	raw, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	c, err := cli.ClientHandshake(ctx, raw, hostname)
	if err == nil {
		_, err = c.Write([]byte("hello"))
		if err == nil {
			buf := make([]byte, 5)
			_, err = io.ReadFull(c, buf)
		}
	}
	if err != nil {
		raw.Close()
	}
	client = handshakeResult{conn: c, err: err}
	server = <-done
	t.Cleanup(func() {
		for _, r := range []handshakeResult{server, client} {
			if r.conn != nil {
				r.conn.Close()
			}
		}
	})
	return server, client
}

func TestX509HandshakeGoCreds(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name     string
		hostname string
	}{
		{"DNSName", "localhost"},
		{"IPAddress", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, client := handshake(t, loadServer(t, f.dir, true), loadClient(t, f.dir, true), tc.hostname)
			require.NoError(t, server.err)
			require.NoError(t, client.err)

			info := server.conn.TLSInfo()
			assert.Equal(t, "TLS 1.3", info.Version)
			assert.Contains(t, []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}, info.CipherSuite)
			assert.Equal(t, "O=gonbd,CN=client.example.com", info.Identity)
			assert.Equal(t, "O=gonbd,CN=localhost", client.conn.TLSInfo().Identity)
		})
	}
}

// TestX509CertificateRequestNamesNoCA checks that the server requests a
// client certificate without a CA name list, because a GnuTLS 3.7 client
// with an RSA key and a CA list in a TLS 1.3 request sends no certificate.
func TestX509CertificateRequestNamesNoCA(t *testing.T) {
	f := newFixture(t)
	addr, result := serveX509Once(t, loadServer(t, f.dir, true))
	pair, err := tls.LoadX509KeyPair(filepath.Join(f.dir, FileClientCert), filepath.Join(f.dir, FileClientKey))
	require.NoError(t, err)

	var request *tls.CertificateRequestInfo
	conn, err := tls.Dial("tcp", addr, &tls.Config{
		InsecureSkipVerify: true,
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			request = cri
			return &pair, nil
		},
	})
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("hello"))
	require.NoError(t, err)
	r := <-result
	require.NoError(t, r.err)

	require.NotNil(t, request, "server did not request a client certificate")
	assert.Empty(t, request.AcceptableCAs)
}

func TestX509HandshakeTLS12Priority(t *testing.T) {
	f := newFixture(t)
	p, err := ParsePriority("NORMAL:-VERS-TLS1.3:-AES-128-GCM:-CHACHA20-POLY1305")
	require.NoError(t, err)
	srv, err := LoadX509(X509Config{Dir: f.dir, Endpoint: EndpointServer, VerifyPeer: true, Priority: p})
	require.NoError(t, err)

	server, client := handshake(t, srv, loadClient(t, f.dir, true), "localhost")
	require.NoError(t, server.err)
	require.NoError(t, client.err)
	assert.Equal(t, "TLS 1.2", server.conn.TLSInfo().Version)
	assert.Equal(t, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", server.conn.TLSInfo().CipherSuite)
}

func TestX509VerifyPeerOff(t *testing.T) {
	f := newFixture(t)
	clientDir := copyDir(t, f.dir)
	require.NoError(t, os.Remove(filepath.Join(clientDir, FileClientCert)))
	require.NoError(t, os.Remove(filepath.Join(clientDir, FileClientKey)))

	t.Run("ServerAsksNoCertificate", func(t *testing.T) {
		server, client := handshake(t, loadServer(t, f.dir, false), loadClient(t, f.dir, true), "localhost")
		require.NoError(t, server.err)
		require.NoError(t, client.err)
		assert.Empty(t, server.conn.TLSInfo().Identity)
	})
	t.Run("ClientSkipsVerification", func(t *testing.T) {
		server, client := handshake(t, loadServer(t, f.dir, false), loadClient(t, clientDir, false), "wrong.example.com")
		require.NoError(t, server.err)
		require.NoError(t, client.err)
	})
}

func TestX509HandshakeFailures(t *testing.T) {
	f := newFixture(t)
	other, err := gen.NewCA("other CA", gen.ValidFor(1))
	require.NoError(t, err)
	regenerated, err := gen.NewCA("gonbd CA", gen.ValidFor(1))
	require.NoError(t, err)

	noCert := copyDir(t, f.dir)
	require.NoError(t, os.Remove(filepath.Join(noCert, FileClientCert)))
	require.NoError(t, os.Remove(filepath.Join(noCert, FileClientKey)))

	otherCA := copyDir(t, f.dir)
	writeLeaf(t, other, gen.Leaf{CommonName: "intruder", Client: true, Validity: gen.ValidFor(1)},
		otherCA, FileClientCert, FileClientKey)

	regeneratedCA := copyDir(t, f.dir)
	writeLeaf(t, regenerated, gen.Leaf{CommonName: "reissued", Client: true, Validity: gen.ValidFor(1)},
		regeneratedCA, FileClientCert, FileClientKey)

	expired := copyDir(t, f.dir)
	past := gen.Validity{NotBefore: time.Now().AddDate(0, 0, -10), NotAfter: time.Now().AddDate(0, 0, -1)}
	writeLeaf(t, f.ca, gen.Leaf{CommonName: "old", Client: true, Validity: past}, expired, FileClientCert, FileClientKey)

	revokedServer := copyDir(t, f.dir)
	crl, err := f.ca.CRL(f.client)
	require.NoError(t, err)
	writeFile(t, filepath.Join(revokedServer, FileCACRL), crl)

	for _, tc := range []struct {
		name      string
		serverDir string
		clientDir string
		serverErr string
	}{
		{"ClientWithoutCertificate", f.dir, noCert, "client didn't provide a certificate"},
		{"ClientCertFromOtherCA", f.dir, otherCA, `client certificate "O=gonbd,CN=intruder": is not issued by a CA in ca-cert.pem`},
		{"ClientCertFromRegeneratedCA", f.dir, regeneratedCA, `client certificate "O=gonbd,CN=reissued": names "O=gonbd,CN=gonbd CA" as its issuer, but the CA of that name in ca-cert.pem did not sign it`},
		{"ClientCertExpired", f.dir, expired, `client certificate "O=gonbd,CN=old": has expired`},
		{"ClientCertRevoked", revokedServer, f.dir, `client certificate "O=gonbd,CN=client.example.com" (serial ` + f.client.SerialNumber.Text(16) + `) is revoked by`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, err := LoadX509(X509Config{Dir: tc.clientDir, Endpoint: EndpointClient, VerifyPeer: true})
			require.NoError(t, err)
			server, client := handshake(t, loadServer(t, tc.serverDir, true), cli, "localhost")
			require.Error(t, server.err)
			assert.Contains(t, server.err.Error(), tc.serverErr)
			assert.Error(t, client.err)
		})
	}
}

func TestX509ClientRejectsServer(t *testing.T) {
	f := newFixture(t)
	other, err := gen.NewCA("other CA", gen.ValidFor(1))
	require.NoError(t, err)
	otherServer := copyDir(t, f.dir)
	writeLeaf(t, other, gen.Leaf{CommonName: "localhost", DNSNames: []string{"localhost"}, Server: true,
		Validity: gen.ValidFor(1)}, otherServer, FileServerCert, FileServerKey)

	for _, tc := range []struct {
		name      string
		serverDir string
		hostname  string
		clientErr string
	}{
		{"WrongHostName", f.dir, "nbd.example.com", `server certificate "O=gonbd,CN=localhost" does not match host name "nbd.example.com" (names in it: localhost, 127.0.0.1): connect with one of those names, or issue the certificate with this one`},
		{"WrongIPAddress", f.dir, "127.0.0.2", `does not match host name "127.0.0.2"`},
		{"ServerCertFromOtherCA", otherServer, "localhost", `server certificate "O=gonbd,CN=localhost": is not issued by a CA in ca-cert.pem`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := LoadX509(X509Config{Dir: tc.serverDir, Endpoint: EndpointServer, VerifyPeer: true})
			require.NoError(t, err)
			server, client := handshake(t, srv, loadClient(t, f.dir, true), tc.hostname)
			require.Error(t, client.err)
			assert.Contains(t, client.err.Error(), tc.clientErr)
			assert.Error(t, server.err)
		})
	}
}

func TestX509ClientNeedsHostname(t *testing.T) {
	f := newFixture(t)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_, err := loadClient(t, f.dir, true).ClientHandshake(context.Background(), a, "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no host name to verify the server certificate against")
}

func TestX509ServerRejectsGarbage(t *testing.T) {
	f := newFixture(t)
	srv := loadServer(t, f.dir, true)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()

	errc := make(chan error, 1)
	go func() {
		raw, err := l.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer raw.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = srv.ServerHandshake(ctx, raw)
		errc <- err
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("NBDMAGIC\x00\x00\x00\x00not a ClientHello at all\r\n"))
	require.NoError(t, err)

	err = <-errc
	require.Error(t, err)
	assert.Contains(t, err.Error(), "TLS handshake with 127.0.0.1:")
	assert.Contains(t, err.Error(), "does not look like a TLS handshake")
}

func TestX509HandshakeContextDeadline(t *testing.T) {
	f := newFixture(t)
	srv := loadServer(t, f.dir, true)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	// The peer never sends a ClientHello.
	_, err := srv.ServerHandshake(ctx, a)
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestX509EndpointMismatch(t *testing.T) {
	f := newFixture(t)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_, err := loadServer(t, f.dir, true).ClientHandshake(context.Background(), a, "localhost")
	assert.ErrorContains(t, err, "endpoint=server cannot connect")
	_, err = loadClient(t, f.dir, true).ServerHandshake(context.Background(), a)
	assert.ErrorContains(t, err, "endpoint=client cannot serve")
}

func TestLoadX509Errors(t *testing.T) {
	f := newFixture(t)
	missingCA := copyDir(t, f.dir)
	require.NoError(t, os.Remove(filepath.Join(missingCA, FileCACert)))
	missingKey := copyDir(t, f.dir)
	require.NoError(t, os.Remove(filepath.Join(missingKey, FileServerKey)))
	wrongKey := copyDir(t, f.dir)
	clientKey, err := os.ReadFile(filepath.Join(f.dir, FileClientKey))
	require.NoError(t, err)
	writeFile(t, filepath.Join(wrongKey, FileServerKey), clientKey)
	garbageCert := copyDir(t, f.dir)
	writeFile(t, filepath.Join(garbageCert, FileServerCert), []byte("not a certificate\n"))
	swapped := copyDir(t, f.dir)
	serverKey, err := os.ReadFile(filepath.Join(f.dir, FileServerKey))
	require.NoError(t, err)
	writeFile(t, filepath.Join(swapped, FileServerCert), serverKey)
	foreignCRL := copyDir(t, f.dir)
	other, err := gen.NewCA("other CA", gen.ValidFor(1))
	require.NoError(t, err)
	crl, err := other.CRL()
	require.NoError(t, err)
	writeFile(t, filepath.Join(foreignCRL, FileCACRL), crl)

	for _, tc := range []struct {
		name string
		dir  string
		want string
	}{
		{"MissingCACert", missingCA, filepath.Join(missingCA, FileCACert)},
		{"MissingServerKey", missingKey, filepath.Join(missingKey, FileServerKey)},
		{"KeyDoesNotMatchCert", wrongKey, filepath.Join(wrongKey, FileServerKey) + " does not belong to the certificate in"},
		{"GarbageCert", garbageCert, filepath.Join(garbageCert, FileServerCert) + ": no PEM block found: the file must be PEM text"},
		{"KeyInCertFile", swapped, filepath.Join(swapped, FileServerCert) + ": no CERTIFICATE PEM block found, only PRIVATE KEY: put the certificate in this file"},
		{"CRLFromOtherCA", foreignCRL, filepath.Join(foreignCRL, FileCACRL) + ": CRL 1 (issuer CN=other CA,O=gonbd) is not signed by a CA in ca-cert.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadX509(X509Config{Dir: tc.dir, Endpoint: EndpointServer, VerifyPeer: true, SanityCheck: true})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestLoadX509ClientWithoutCertificate(t *testing.T) {
	f := newFixture(t)
	dir := copyDir(t, f.dir)
	require.NoError(t, os.Remove(filepath.Join(dir, FileClientCert)))
	require.NoError(t, os.Remove(filepath.Join(dir, FileClientKey)))
	x, err := LoadX509(X509Config{Dir: dir, Endpoint: EndpointClient, VerifyPeer: true, SanityCheck: true})
	require.NoError(t, err)
	assert.Nil(t, x.cert)
}

func TestLoadX509IgnoresDHParams(t *testing.T) {
	f := newFixture(t)
	dir := copyDir(t, f.dir)
	writeFile(t, filepath.Join(dir, FileDHParams), []byte("-----BEGIN DH PARAMETERS-----\nMAA=\n-----END DH PARAMETERS-----\n"))
	_, err := LoadX509(X509Config{Dir: dir, Endpoint: EndpointServer, VerifyPeer: true, SanityCheck: true})
	assert.NoError(t, err)
}

func TestLoadX509RejectsTLS13SuiteRemoval(t *testing.T) {
	f := newFixture(t)
	p, err := ParsePriority("NORMAL:-CHACHA20-POLY1305")
	require.NoError(t, err)
	_, err = LoadX509(X509Config{Dir: f.dir, Endpoint: EndpointServer, Priority: p})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "priority removes TLS_CHACHA20_POLY1305_SHA256 from TLS 1.3, which crypto/tls cannot do: keep CHACHA20-POLY1305 or add -VERS-TLS1.3")
}

// ticketCounter is a client session cache that counts the session
// tickets a server issues.
type ticketCounter struct {
	tls.ClientSessionCache
	puts int
}

func (c *ticketCounter) Put(key string, cs *tls.ClientSessionState) {
	c.puts++
	c.ClientSessionCache.Put(key, cs)
}

// TestX509ServerIssuesNoTickets checks that an x509 server issues no
// session tickets, as qemu-nbd does, whether or not the priority has
// %NO_TICKETS.
func TestX509ServerIssuesNoTickets(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name     string
		priority string
	}{
		{"Normal", "NORMAL"},
		{"NoTickets", "NORMAL:%NO_TICKETS"},
		{"NoTicketsTLS12", "NORMAL:-VERS-TLS1.3:%NO_TICKETS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePriority(tc.priority)
			require.NoError(t, err)
			srv, err := LoadX509(X509Config{Dir: f.dir, Endpoint: EndpointServer, Priority: p})
			require.NoError(t, err)
			addr, result := serveX509Once(t, srv)

			cache := &ticketCounter{ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ClientSessionCache: cache})
			require.NoError(t, err)
			defer c.Close()
			_, err = c.Write([]byte("hello"))
			require.NoError(t, err)
			// A TLS 1.3 ticket arrives after the handshake, so read the
			// echo to process it.
			_, err = io.ReadFull(c, make([]byte, 5))
			require.NoError(t, err)
			require.NoError(t, (<-result).err)

			assert.Zero(t, cache.puts, "session tickets")
		})
	}
}
