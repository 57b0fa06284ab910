package integration

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// pskDir creates a tls-creds-psk directory whose keys.psk holds a key for
// user qemu.
func pskDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	mustRun(t, requireTool(t, "psktool"), "-u", "qemu", "-p", filepath.Join(dir, "keys.psk"))
	return dir
}

func TestTLSPSKClients(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	qemuIo := requireTool(t, "qemu-io")
	dir := pskDir(t)
	img := sparseImage(t, 1<<20)
	srv := serveUnix(t, "-t", "--object", "tls-creds-psk,id=tls0,endpoint=server,dir="+dir, "--tls-creds", "tls0", "-f", "raw", img)
	sock := strings.TrimPrefix(srv.uri, "nbd+unix:///?socket=")

	out := mustRun(t, nbdinfo, "--size", "nbds+unix://qemu@/?socket="+sock+"&tls-psk-file="+filepath.Join(dir, "keys.psk"))
	assert.Equal(t, "1048576\n", out)

	out = mustRun(t, qemuIo, "--object", "tls-creds-psk,id=c0,endpoint=client,dir="+dir,
		"--image-opts", "driver=nbd,path="+sock+",tls-creds=c0",
		"-c", "write -P 0x42 0 64k", "-c", "read -P 0x42 0 64k")
	assert.NotContains(t, out, "Pattern verification failed")

	r := run(t, nbdinfo, "--size", srv.uri)
	assert.NotEqual(t, 0, r.code, "a plaintext client must be rejected when TLS is required")
}

func TestTLSOptionalServesPlaintext(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	dir := pskDir(t)
	img := sparseImage(t, 1<<20)
	srv := serveUnix(t, "-t", "--object", "tls-creds-psk,id=tls0,endpoint=server,dir="+dir, "--tls-creds", "tls0", "--tls=on", "-f", "raw", img)

	out := mustRun(t, nbdinfo, "--size", srv.uri)
	assert.Equal(t, "1048576\n", out)
}

func TestTLSBadObjectOneLine(t *testing.T) {
	r := run(t, bin(t, "gonbd"), "--object", "tls-creds-psk,id=tls0,endpoint=server,dir=/nonexistent", "--tls-creds", "tls0", sparseImage(t, 1<<20))
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "/nonexistent/keys.psk")
	oneLine(t, r.stderr)
}
