package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gonbd/gonbd/export/memory"
	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/gonbd/gonbd/tlscreds/gen"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gonbdCredsX509 runs gonbd-creds x509 for a server reachable as
// localhost and 127.0.0.1 and returns the directory.
func gonbdCredsX509(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	mustRun(t, bin(t, "gonbd-creds"), "x509", "--dir", dir, "--hostname", "localhost", "--ip", "127.0.0.1",
		"--client-name", "laptop.example.com")
	return dir
}

// startQemuNBDX509 serves a 1 MiB image of random bytes with qemu-nbd and
// x509 credentials from dir, plus any extra arguments.
func startQemuNBDX509(t *testing.T, dir string, extra ...string) (addr string, image []byte) {
	t.Helper()
	qemuNBD := requireTool(t, "qemu-nbd")
	image = make([]byte, 1<<20)
	_, err := rand.Read(image)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "disk.raw")
	require.NoError(t, os.WriteFile(path, image, 0o600))

	port := freePort(t)
	args := []string{"--persistent", "-f", "raw", "-b", "127.0.0.1", "-p", fmt.Sprint(port),
		"--object", "tls-creds-x509,id=tls0,endpoint=server,dir=" + dir, "--tls-creds", "tls0"}
	args = append(args, extra...)
	args = append(args, path)
	p := start(t, qemuNBD, args...)
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	waitTCP(t, p, addr)
	return addr, image
}

func TestX509GonbdCredsServedByQemuNBD(t *testing.T) {
	dir := gonbdCredsX509(t)
	addr, _ := startQemuNBDX509(t, strings.Replace(dir, ",", ",,", -1))
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)

	for _, host := range []string{"localhost", "127.0.0.1"} {
		t.Run("QemuImg/"+host, func(t *testing.T) {
			out := mustRun(t, requireTool(t, "qemu-img"), "info",
				"--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+dir,
				"--image-opts", fmt.Sprintf("driver=nbd,host=%s,port=%s,tls-creds=tls0", host, port))
			assert.Contains(t, out, "virtual size: 1 MiB")
		})
	}
	t.Run("Nbdinfo", func(t *testing.T) {
		out := mustRun(t, requireTool(t, "nbdinfo"), fmt.Sprintf("nbds://localhost:%s/?tls-certificates=%s", port, dir))
		assert.Contains(t, out, "export-size: 1048576")
	})
}

// dialQemuNBD connects gonbd's NBD client with x509 credentials from dir.
func dialQemuNBD(t *testing.T, addr, dir string) (*nbd.Client, error) {
	t.Helper()
	creds, err := tlscreds.LoadX509(tlscreds.X509Config{Dir: dir, Endpoint: tlscreds.EndpointClient,
		VerifyPeer: true, SanityCheck: true})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return nbd.DialAddr(ctx, "tcp", addr, nbd.WithTLS(creds), nbd.WithTLSHostname("localhost"))
}

// TestX509IdentityMatchesQemuAuthz checks that the identity gonbd reports
// for a client certificate is the string QEMU's authz-simple matches:
// qemu-nbd admits gonbd's client only with that exact identity.
func TestX509IdentityMatchesQemuAuthz(t *testing.T) {
	dir := gonbdCredsX509(t)
	const identity = "O=gonbd,CN=laptop.example.com"

	for _, tc := range []struct {
		name     string
		identity string
		allowed  bool
	}{
		{"SameIdentity", identity, true},
		{"ReversedOrder", "CN=laptop.example.com,O=gonbd", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			authz := "authz-simple,id=auth0,identity=" + strings.Replace(tc.identity, ",", ",,", -1)
			addr, image := startQemuNBDX509(t, dir, "--object", authz, "--tls-authz", "auth0")
			c, err := dialQemuNBD(t, addr, dir)
			if !tc.allowed {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			defer c.Close()
			buf := make([]byte, 4096)
			_, err = c.ReadAt(buf, 8192)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(image[8192:8192+4096], buf))
		})
	}
}

// startInProcessServer serves a memory export over TLS with gonbd's NBD
// server and the x509 credentials in dir.
func startInProcessServer(t *testing.T, dir string, authz nbd.Authorizer) (port int, backend *memory.Backend) {
	t.Helper()
	creds, err := tlscreds.LoadX509(tlscreds.X509Config{Dir: dir, Endpoint: tlscreds.EndpointServer,
		VerifyPeer: true, SanityCheck: true})
	require.NoError(t, err)
	backend = memory.New(4<<20, false)
	srv, err := nbd.NewServer(nbd.ServerConfig{
		Exports:    []*nbd.Export{{Name: "disk", Backend: backend}},
		TLS:        creds,
		TLSMode:    nbd.TLSRequire,
		Authz:      authz,
		Persistent: true,
	})
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ctx, l)
	}()
	t.Cleanup(func() {
		cancel()
		l.Close()
		<-done
	})
	return l.Addr().(*net.TCPAddr).Port, backend
}

// recordingAuthz allows one identity and records what it was asked.
type recordingAuthz struct {
	allow string
	seen  chan string
}

func (a *recordingAuthz) IsAllowed(identity string) (bool, error) {
	select {
	case a.seen <- identity:
	default:
	}
	return identity == a.allow, nil
}

func TestX509InProcessServerWithQemuClients(t *testing.T) {
	dir := gonbdCredsX509(t)
	authz := &recordingAuthz{allow: "O=gonbd,CN=laptop.example.com", seen: make(chan string, 16)}
	port, backend := startInProcessServer(t, dir, authz)
	pattern := bytes.Repeat([]byte("gonbd-x509!"), 1000)[:8192]
	_, err := backend.WriteAt(pattern, 65536)
	require.NoError(t, err)

	t.Run("QemuImgInfo", func(t *testing.T) {
		out := mustRun(t, requireTool(t, "qemu-img"), "info",
			"--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+dir,
			"--image-opts", fmt.Sprintf("driver=nbd,host=localhost,port=%d,export=disk,tls-creds=tls0", port))
		assert.Contains(t, out, "virtual size: 4 MiB")
		assert.Equal(t, "O=gonbd,CN=laptop.example.com", <-authz.seen)
	})
	t.Run("QemuIoWriteRead", func(t *testing.T) {
		out := mustRun(t, requireTool(t, "qemu-io"),
			"--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+dir,
			"--image-opts", fmt.Sprintf("driver=nbd,host=127.0.0.1,port=%d,export=disk,tls-creds=tls0", port),
			"-c", "write -P 0x5a 1M 64k", "-c", "read -P 0x5a 1M 64k")
		assert.Contains(t, out, "read 65536/65536 bytes")
	})
	t.Run("NbdinfoTLSCertificates", func(t *testing.T) {
		out := mustRun(t, requireTool(t, "nbdinfo"), fmt.Sprintf("nbds://localhost:%d/disk?tls-certificates=%s", port, dir))
		assert.Contains(t, out, "export-size: 4194304")
		assert.Contains(t, out, "TLS")
	})
	t.Run("NbdcopyToFile", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "copy.raw")
		mustRun(t, requireTool(t, "nbdcopy"), fmt.Sprintf("nbds://localhost:%d/disk?tls-certificates=%s", port, dir), out)
		data, err := os.ReadFile(out)
		require.NoError(t, err)
		require.Len(t, data, 4<<20)
		assert.True(t, bytes.Equal(pattern, data[65536:65536+8192]))
	})
	t.Run("PlaintextClientRejected", func(t *testing.T) {
		r := run(t, requireTool(t, "qemu-img"), "info", fmt.Sprintf("nbd://127.0.0.1:%d/disk", port))
		assert.NotEqual(t, 0, r.code)
	})
	t.Run("OtherCARejected", func(t *testing.T) {
		r := run(t, requireTool(t, "nbdinfo"), fmt.Sprintf("nbds://localhost:%d/disk?tls-certificates=%s", port, gonbdCredsX509(t)))
		assert.NotEqual(t, 0, r.code)
	})
	t.Run("UnauthorizedIdentityRejected", func(t *testing.T) {
		// Same CA, another client name: TLS succeeds and authz rejects.
		other := copyCredsWithClient(t, dir, "intruder.example.com")
		r := run(t, requireTool(t, "nbdinfo"), fmt.Sprintf("nbds://localhost:%d/disk?tls-certificates=%s", port, other))
		assert.NotEqual(t, 0, r.code)
		assert.Equal(t, "O=gonbd,CN=intruder.example.com", lastSeen(authz.seen))
	})
}

// lastSeen drains ch and returns the last identity in it.
func lastSeen(ch chan string) string {
	var last string
	for {
		select {
		case s := <-ch:
			last = s
		default:
			return last
		}
	}
}

// copyCredsWithClient copies the CA and server files of dir to a new
// directory and issues a client certificate named cn from the same CA.
func copyCredsWithClient(t *testing.T, dir, cn string) string {
	t.Helper()
	out := t.TempDir()
	for _, name := range []string{"ca-cert.pem", "server-cert.pem", "server-key.pem"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(out, name), data, 0o600))
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca-cert.pem"))
	require.NoError(t, err)
	block, _ := pem.Decode(certPEM)
	require.NotNil(t, block)
	caCert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	require.NoError(t, err)
	caKey, err := tlscreds.ParsePrivateKeyPEM(keyPEM, nil)
	require.NoError(t, err)

	ca := &gen.CA{Cert: caCert, Key: caKey}
	cert, key, err := ca.Issue(gen.Leaf{CommonName: cn, Client: true, Validity: gen.ValidFor(1)})
	require.NoError(t, err)
	clientKey, err := gen.KeyPEM(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(out, "client-cert.pem"), gen.CertPEM(cert), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(out, "client-key.pem"), clientKey, 0o600))
	return out
}

// TestPSKGonbdCredsServedByQemuNBD checks that gonbd-creds psk writes a
// keys.psk that qemu-nbd and qemu-img load.
func TestPSKGonbdCredsServedByQemuNBD(t *testing.T) {
	qemuNBD := requireTool(t, "qemu-nbd")
	dir := filepath.Join(t.TempDir(), "keys")
	mustRun(t, bin(t, "gonbd-creds"), "psk", "--dir", dir, "--username", "rich")

	image := filepath.Join(t.TempDir(), "disk.raw")
	require.NoError(t, os.WriteFile(image, make([]byte, 1<<20), 0o600))
	port := freePort(t)
	p := start(t, qemuNBD, "--persistent", "-f", "raw", "-b", "127.0.0.1", "-p", fmt.Sprint(port),
		"--object", "tls-creds-psk,id=tls0,endpoint=server,dir="+dir, "--tls-creds", "tls0", image)
	waitTCP(t, p, fmt.Sprintf("127.0.0.1:%d", port))

	out := mustRun(t, requireTool(t, "qemu-img"), "info",
		"--object", "tls-creds-psk,id=tls0,endpoint=client,username=rich,dir="+dir,
		"--image-opts", fmt.Sprintf("driver=nbd,host=127.0.0.1,port=%d,tls-creds=tls0", port))
	assert.Contains(t, out, "virtual size: 1 MiB")
}

// ticketCounter is a crypto/tls client session cache that only counts the
// session tickets it is given.
type ticketCounter struct {
	mu      sync.Mutex
	tickets int
}

func (c *ticketCounter) Get(string) (*tls.ClientSessionState, bool) { return nil, false }

func (c *ticketCounter) Put(_ string, s *tls.ClientSessionState) {
	if s != nil {
		c.mu.Lock()
		c.tickets++
		c.mu.Unlock()
	}
}

// countTickets upgrades a raw connection with NBD_OPT_STARTTLS, lists the
// exports over TLS (which makes crypto/tls read any NewSessionTicket the
// server sent after the handshake) and returns the number of tickets.
func countTickets(t *testing.T, s *robustServer, dir string) int {
	t.Helper()
	c := dialRawFlags(t, s, newstyleFlags)
	c.sendOption(proto.OptStartTLS, nil)
	c.expectReply(proto.OptStartTLS, proto.RepAck)

	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "client-cert.pem"), filepath.Join(dir, "client-key.pem"))
	require.NoError(t, err)
	counter := &ticketCounter{}
	conn := tls.Client(c.conn, &tls.Config{
		// The server certificate is not what this test checks.
		InsecureSkipVerify: true,
		Certificates:       []tls.Certificate{cert},
		ClientSessionCache: counter,
		MinVersion:         tls.VersionTLS13,
	})
	c.conn = conn
	c.deadline()
	require.NoError(t, conn.Handshake())
	c.sendOption(proto.OptList, nil)
	c.expectReply(proto.OptList, proto.RepAck)
	counter.mu.Lock()
	defer counter.mu.Unlock()
	return counter.tickets
}

// qemu-nbd sends no session tickets, which this test checks too, so gonbd
// must send none either.
func TestX509ServerSendsNoSessionTickets(t *testing.T) {
	dir := gonbdCredsX509(t)
	qemuAddr, _ := startQemuNBDX509(t, dir)
	gonbd := startRobustServer(t, "--object", "tls-creds-x509,id=tls0,endpoint=server,dir="+dir,
		"--tls-creds", "tls0", "-f", "raw", sparseImage(t, 1<<20))

	qemu := &robustServer{network: "tcp", addr: qemuAddr}
	assert.Zero(t, countTickets(t, qemu, dir), "tickets from qemu-nbd")
	assert.Zero(t, countTickets(t, gonbd, dir), "tickets from gonbd")
}
