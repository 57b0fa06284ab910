package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// qcow2HeaderNaming returns the first 512 bytes of a qcow2 image made by
// qemu-img whose backing file is target, as a client would write them to
// a raw export to reach target on the host.
func qcow2HeaderNaming(t *testing.T, target string) string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "evil.qcow2")
	mustRun(t, requireTool(t, "qemu-img"), "create", "-q", "-f", "qcow2", "-b", target, "-F", "raw", img, "1M")
	header := filepath.Join(dir, "header.bin")
	require.NoError(t, os.WriteFile(header, fileBytes(t, img)[:512], 0o644))
	return header
}

// TestProbedRawRejectsQcow2Header writes a qcow2 header that names a host
// file as its backing file over block 0 of a raw image served without -f.
// gonbd must reject the write with EPERM, as qemu-nbd does: otherwise the
// next gonbd started without -f would probe the image as qcow2 and serve
// the host file to the client.
func TestProbedRawRejectsQcow2Header(t *testing.T) {
	qemuIO := requireTool(t, "qemu-io")
	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte("host secret"), 0o600))
	header := qcow2HeaderNaming(t, secret)
	img := sparseImage(t, 1<<20)

	srv := serveTCP(t, "-t", img)
	r := run(t, qemuIO, "-f", "raw", "-c", "write -s "+header+" 0 512", srv.uri)
	assert.Contains(t, r.stdout+r.stderr, "Operation not permitted")
	assert.Equal(t, make([]byte, 512), fileBytes(t, img)[:512], "the header reached the image")
	assert.Contains(t, srv.stderr.String(), "probed as raw")

	// Writes elsewhere in block 0 still work.
	mustRun(t, qemuIO, "-f", "raw", "-c", "write -P 0x51 0 4", "-c", "write -s "+header+" 512 512", srv.uri)
	assert.Equal(t, []byte("QQQQ"), fileBytes(t, img)[:4])
}

// TestExplicitRawAllowsQcow2Header checks that -f raw lifts the probed-image
// restriction, as qemu-nbd -f raw does.
func TestExplicitRawAllowsQcow2Header(t *testing.T) {
	qemuIO := requireTool(t, "qemu-io")
	img := sparseImage(t, 1<<20)
	header := qcow2HeaderNaming(t, img)

	srv := serveTCP(t, "-t", "-f", "raw", img)
	mustRun(t, qemuIO, "-f", "raw", "-c", "write -s "+header+" 0 512", srv.uri)
	assert.True(t, strings.HasPrefix(string(fileBytes(t, img)), "QFI\xfb"))
	assert.NotContains(t, srv.stderr.String(), "probed as raw")
}

// TestX509IPHostNotInDNSName connects to 127.0.0.1 with a server
// certificate that spells 127.0.0.1 as a dNSName but has no iPAddress
// name. GnuTLS clients (nbdinfo, qemu-img) reject it, and so must
// gonbdinfo: an IP address matches only an iPAddress name.
func TestX509IPHostNotInDNSName(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	pki := newGuidePKI(t)
	pki.issue(t, "ip-as-dns", "cn = 127.0.0.1\ndns_name = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\n")
	serverDir := filepath.Join(t.TempDir(), "server")
	require.NoError(t, os.Mkdir(serverDir, 0o700))
	pki.install(t, serverDir, "ip-as-dns", "server")

	img := sparseImage(t, 1<<20)
	srv := serveTCP(t, "-t", "-f", "raw", "--object", "tls-creds-x509,id=tls0,endpoint=server,verify-peer=off,dir="+serverDir,
		"--tls-creds", "tls0", img)
	uri := strings.Replace(srv.uri, "nbd://", "nbds://", 1) + "?tls-certificates=" + pki.client

	peer := run(t, nbdinfo, "--size", uri)
	require.NotEqual(t, 0, peer.code, "nbdinfo accepted the certificate: %s", peer.stdout)
	assert.Contains(t, peer.stderr, "certificate verification")

	ours := run(t, bin(t, "gonbdinfo"), "--size", uri)
	assert.Equal(t, 1, ours.code, "gonbdinfo accepted the certificate: %s", ours.stdout)
	assert.Contains(t, ours.stderr, `does not match host name "127.0.0.1"`)
}

// TestX509CNIgnoredWithIPName connects to localhost with a server
// certificate whose CN is localhost and whose only subject alternative name
// is the iPAddress 127.0.0.1 (certtool's ip_address without dns_name).
// GnuTLS clients do not fall back to the CN once a certificate has an
// iPAddress name, so nbdinfo rejects it, and so must gonbdinfo.
func TestX509CNIgnoredWithIPName(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	pki := newGuidePKI(t)
	pki.issue(t, "ip-only", "cn = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\n")
	serverDir := filepath.Join(t.TempDir(), "server")
	require.NoError(t, os.Mkdir(serverDir, 0o700))
	pki.install(t, serverDir, "ip-only", "server")

	img := sparseImage(t, 1<<20)
	srv := serveTCP(t, "-t", "-f", "raw", "--object", "tls-creds-x509,id=tls0,endpoint=server,verify-peer=off,dir="+serverDir,
		"--tls-creds", "tls0", img)
	byIP := strings.Replace(srv.uri, "nbd://", "nbds://", 1) + "?tls-certificates=" + pki.client
	byName := strings.Replace(byIP, "127.0.0.1", "localhost", 1)

	peer := run(t, nbdinfo, "--size", byName)
	require.NotEqual(t, 0, peer.code, "nbdinfo accepted the certificate: %s", peer.stdout)
	assert.Contains(t, peer.stderr, "certificate verification")

	ours := run(t, bin(t, "gonbdinfo"), "--size", byName)
	assert.Equal(t, 1, ours.code, "gonbdinfo accepted the certificate: %s", ours.stdout)
	assert.Contains(t, ours.stderr, `does not match host name "localhost" (names in it: 127.0.0.1)`)

	// The iPAddress name itself matches, for both clients.
	mustRun(t, nbdinfo, "--size", byIP)
	mustRun(t, bin(t, "gonbdinfo"), "--size", byIP)
}

// TestQcow2MultiConnCopy serves a qcow2 image to several clients, as
// backup tools do (qemu-nbd -e 8 with imageio, nbdcopy), and checks that
// gonbd advertises multi-conn like qemu-nbd 7.2 and that nbdcopy's four
// connections write the image correctly.
func TestQcow2MultiConnCopy(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	nbdcopy := requireTool(t, "nbdcopy")
	qemuImg := requireTool(t, "qemu-img")
	src := randomImage(t, 32<<20, 7)
	img := filepath.Join(t.TempDir(), "disk.qcow2")
	mustRun(t, qemuImg, "create", "-q", "-f", "qcow2", img, "32M")

	srv := serveUnix(t, "-t", "-e", "4", "-f", "qcow2", img)
	r := run(t, nbdinfo, "--can", "multi-conn", srv.uri)
	assert.Equal(t, 0, r.code, "gonbd does not advertise multi-conn for qcow2 with -e 4")

	mustRun(t, nbdcopy, "--connections=4", "--flush", src, srv.uri)
	require.NoError(t, srv.cmd.Process.Signal(os.Interrupt))
	require.Equal(t, 0, srv.wait(30*time.Second))
	mustRun(t, qemuImg, "compare", "-f", "raw", "-F", "qcow2", src, img)
	mustRun(t, qemuImg, "check", "-q", img)
}

// TestMultiConnFollowsShared checks that gonbd advertises multi-conn
// exactly when qemu-nbd 7.2 does: with -e 0 (unlimited) or -e 2 and more,
// not with the default -e 1. A client that sees multi-conn opens several
// connections, and nbdcopy would wait for ever for the ones -e 1 does not
// accept.
func TestMultiConnFollowsShared(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	nbdcopy := requireTool(t, "nbdcopy")
	qemuImg := requireTool(t, "qemu-img")
	src := randomImage(t, 4<<20, 3)
	qcow2 := filepath.Join(t.TempDir(), "disk.qcow2")
	mustRun(t, qemuImg, "create", "-q", "-f", "qcow2", qcow2, "4M")

	cases := []struct {
		name      string
		args      []string
		multiConn bool
	}{
		{"RawDefault", []string{"-f", "raw", sparseImage(t, 4<<20)}, false},
		{"Qcow2Default", []string{"-f", "qcow2", qcow2}, false},
		{"RawShared2", []string{"-e", "2", "-f", "raw", sparseImage(t, 4<<20)}, true},
		{"MemoryUnlimited", []string{"-e", "0", "--image-opts", "driver=memory,size=4M"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := serveUnix(t, append([]string{"-t"}, tc.args...)...)
			r := run(t, nbdinfo, "--can", "multi-conn", srv.uri)
			if tc.multiConn {
				assert.Equal(t, 0, r.code, "multi-conn not advertised")
			} else {
				assert.Equal(t, 2, r.code, "multi-conn advertised")
			}

			copier := start(t, nbdcopy, src, srv.uri)
			assert.Equal(t, 0, copier.wait(30*time.Second), "nbdcopy did not finish: %s", copier.stderr.String())
		})
	}
}

// TestPIDFileHeldByQemuNBD starts gonbd with the pid file of a running
// qemu-nbd. qemu-nbd 7.2 locks its pid file, and gonbd must honour that
// lock: exit 1 with one line, and leave qemu-nbd's pid file alone.
func TestPIDFileHeldByQemuNBD(t *testing.T) {
	qemuNBD := requireTool(t, "qemu-nbd")
	img := sparseImage(t, 1<<20)
	pidFile := filepath.Join(t.TempDir(), "nbd.pid")
	sock := socketPath(t)
	q := start(t, qemuNBD, "-t", "-f", "raw", "-k", sock, "--pid-file", pidFile, img)
	waitUnix(t, q, sock)
	// qemu-nbd writes its pid file after it creates the socket.
	waitReady(t, q, func() bool {
		b, err := os.ReadFile(pidFile)
		return err == nil && bytes.HasSuffix(b, []byte("\n"))
	}, pidFile)
	want := fileBytes(t, pidFile)

	g := start(t, bin(t, "gonbd"), "-t", "-f", "raw", "-k", socketPath(t), "--pid-file", pidFile, img)
	require.Equal(t, 1, g.wait(15*time.Second), "gonbd did not exit 1; stderr:\n%s", g.stderr.String())
	stderr := g.stderr.String()
	assert.Contains(t, stderr, "is locked by another running server")
	assert.Equal(t, 1, strings.Count(stderr, "\n"), "expected one line, got %q", stderr)
	assert.Equal(t, want, fileBytes(t, pidFile), "gonbd changed qemu-nbd's pid file")
}
