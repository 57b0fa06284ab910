package tlscreds

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// certtoolIdentity is the DN of the client certificate that
// certtoolFixture issues, as QEMU's authz objects see it.
const certtoolIdentity = "C=GB,ST=London,L=City Of London,O=Name of your organization,CN=client.example.com"

// certtoolScript creates credentials with certtool exactly as QEMU's TLS
// guide describes (templates and commands), for a server named
// localhost / 127.0.0.1.
const certtoolScript = `
set -e
cat > ca.info <<END
cn = Name of your organization
ca
cert_signing_key
END
certtool --generate-privkey > ca-key.pem
certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info --outfile ca-cert.pem
cat > server.info <<END
organization = Name  of your organization
cn = localhost
dns_name = localhost
ip_address = 127.0.0.1
tls_www_server
encryption_key
signing_key
END
certtool --generate-privkey > server-key.pem
certtool --generate-certificate --load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem \
	--load-privkey server-key.pem --template server.info --outfile server-cert.pem
cat > client.info <<END
country = GB
state = London
locality = City Of London
organization = Name of your organization
cn = client.example.com
tls_www_client
encryption_key
signing_key
END
certtool --generate-privkey > client-key.pem
certtool --generate-certificate --load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem \
	--load-privkey client-key.pem --template client.info --outfile client-cert.pem
`

func certtoolFixture(t *testing.T) string {
	t.Helper()
	needTool(t, "certtool")
	dir := t.TempDir()
	runShell(t, dir, certtoolScript)
	return dir
}

func TestX509HandshakeCerttoolCreds(t *testing.T) {
	dir := certtoolFixture(t)
	server, client := handshake(t, loadServer(t, dir, true), loadClient(t, dir, true), "localhost")
	require.NoError(t, server.err)
	require.NoError(t, client.err)
	assert.Equal(t, certtoolIdentity, server.conn.TLSInfo().Identity)
	assert.Equal(t, "O=Name  of your organization,CN=localhost", client.conn.TLSInfo().Identity)
}

func TestX509CerttoolCRL(t *testing.T) {
	dir := certtoolFixture(t)
	runShell(t, dir, `
set -e
printf 'crl_next_update = 30\ncrl_number = 1\n' > crl.info
certtool --generate-crl --load-ca-privkey ca-key.pem --load-ca-certificate ca-cert.pem \
	--load-certificate client-cert.pem --template crl.info --outfile ca-crl.pem
`)
	server, client := handshake(t, loadServer(t, dir, true), loadClient(t, dir, true), "localhost")
	require.Error(t, server.err)
	assert.Contains(t, server.err.Error(), fmt.Sprintf("client certificate %q", certtoolIdentity))
	assert.Contains(t, server.err.Error(), "is revoked by "+filepath.Join(dir, FileCACRL))
	assert.Error(t, client.err)
}

// serveX509Once accepts one connection, runs the server handshake and echoes
// the first 5 bytes.
func serveX509Once(t *testing.T, srv Server) (addr string, result <-chan handshakeResult) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	done := make(chan handshakeResult, 1)
	go func() {
		raw, err := l.Accept()
		if err != nil {
			done <- handshakeResult{err: err}
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := srv.ServerHandshake(ctx, raw)
		if err != nil {
			raw.Close()
			done <- handshakeResult{err: err}
			return
		}
		buf := make([]byte, 5)
		if _, err = io.ReadFull(c, buf); err == nil {
			_, err = c.Write(buf)
		}
		done <- handshakeResult{conn: c, err: err}
		c.Close()
	}()
	return l.Addr().String(), done
}

// gnutlsCLI connects gnutls-cli to addr, sends "hello" and returns its
// output and error.
func gnutlsCLI(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args = append(args, "-p", port, host)
	cmd := exec.CommandContext(ctx, needTool(t, "gnutls-cli"), args...)
	cmd.Stdin = strings.NewReader("hello")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestX509GnutlsCliClient(t *testing.T) {
	dir := certtoolFixture(t)
	withCert := []string{"--x509certfile", filepath.Join(dir, FileClientCert), "--x509keyfile", filepath.Join(dir, FileClientKey)}
	for _, tc := range []struct {
		name      string
		args      []string
		version   string
		serverErr string
	}{
		{"TLS13", withCert, "TLS 1.3", ""},
		{"TLS12", append([]string{"--priority", "NORMAL:-VERS-TLS1.3"}, withCert...), "TLS 1.2", ""},
		{"NoClientCertificate", nil, "", "client didn't provide a certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, result := serveX509Once(t, loadServer(t, dir, true))
			args := append([]string{"--x509cafile", filepath.Join(dir, FileCACert)}, tc.args...)
			out, cliErr := gnutlsCLI(t, addr, args...)
			r := <-result
			if tc.serverErr != "" {
				require.Error(t, r.err, out)
				assert.Contains(t, r.err.Error(), tc.serverErr)
				return
			}
			require.NoError(t, r.err, out)
			require.NoError(t, cliErr, out)
			assert.Equal(t, certtoolIdentity, r.conn.TLSInfo().Identity)
			assert.Equal(t, tc.version, r.conn.TLSInfo().Version)
		})
	}
}

// startGnutlsServ runs gnutls-serv in echo mode on a free loopback port.
func startGnutlsServ(t *testing.T, args ...string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	args = append(args, "--echo", "-p", fmt.Sprint(port))
	cmd := exec.Command(needTool(t, "gnutls-serv"), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("gnutls-serv output:\n%s", out.String())
		}
	})

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; i < 200; i++ {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return addr
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("gnutls-serv did not listen on %s", addr)
	return ""
}

// dialTLS connects x to addr and exchanges "hello" with an echo server.
func dialTLS(t *testing.T, x *X509, addr, hostname string) (Conn, error) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := x.ClientHandshake(ctx, raw, hostname)
	if err != nil {
		raw.Close()
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	// gnutls-serv --echo echoes whole lines.
	if _, err := c.Write([]byte("hello\n")); err != nil {
		return nil, err
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, err
	}
	if string(buf) != "hello\n" {
		return nil, fmt.Errorf("echo returned %q", buf)
	}
	return c, nil
}

func gnutlsServArgs(dir string) []string {
	return []string{"--x509cafile", filepath.Join(dir, FileCACert),
		"--x509certfile", filepath.Join(dir, FileServerCert), "--x509keyfile", filepath.Join(dir, FileServerKey),
		"--require-client-cert", "--verify-client-cert"}
}

func TestX509GnutlsServServer(t *testing.T) {
	dir := certtoolFixture(t)
	for _, tc := range []struct {
		name     string
		priority string
		hostname string
		version  string
	}{
		{"TLS13", "NORMAL", "localhost", "TLS 1.3"},
		{"TLS12", "NORMAL:-VERS-TLS1.3", "127.0.0.1", "TLS 1.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startGnutlsServ(t, append(gnutlsServArgs(dir), "--priority", tc.priority)...)
			c, err := dialTLS(t, loadClient(t, dir, true), addr, tc.hostname)
			require.NoError(t, err)
			assert.Equal(t, tc.version, c.TLSInfo().Version)
			assert.Equal(t, "O=Name  of your organization,CN=localhost", c.TLSInfo().Identity)
		})
	}
}

func TestX509GnutlsServWrongHostName(t *testing.T) {
	dir := certtoolFixture(t)
	addr := startGnutlsServ(t, gnutlsServArgs(dir)...)
	_, err := dialTLS(t, loadClient(t, dir, true), addr, "other.example.com")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `does not match host name "other.example.com"`)
}

func TestX509GnutlsServRejectsClientWithoutCert(t *testing.T) {
	dir := certtoolFixture(t)
	clientDir := copyDir(t, dir)
	require.NoError(t, os.Remove(filepath.Join(clientDir, FileClientCert)))
	require.NoError(t, os.Remove(filepath.Join(clientDir, FileClientKey)))
	addr := startGnutlsServ(t, gnutlsServArgs(dir)...)
	_, err := dialTLS(t, loadClient(t, clientDir, true), addr, "localhost")
	assert.Error(t, err)
}
