package integration

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// server is a running gonbd and the URI that reaches its export.
type server struct {
	*proc
	uri string
}

// serveTCP starts gonbd on a free loopback port with args before IMAGE.
func serveTCP(t *testing.T, args ...string) server {
	t.Helper()
	port := freePort(t)
	full := append([]string{"-b", "127.0.0.1", "-p", strconv.Itoa(port)}, args...)
	p := start(t, bin(t, "gonbd"), full...)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitTCP(t, p, addr)
	return server{proc: p, uri: "nbd://" + addr + "/"}
}

// serveUnix starts gonbd on a Unix socket with args before IMAGE. The URI
// names the default (empty) export.
func serveUnix(t *testing.T, args ...string) server {
	t.Helper()
	sock := socketPath(t)
	p := start(t, bin(t, "gonbd"), append([]string{"-k", sock}, args...)...)
	waitUnix(t, p, sock)
	return server{proc: p, uri: "nbd+unix:///?socket=" + sock}
}

// socketPath returns a Unix socket path in a short temporary directory,
// because t.TempDir paths can pass the 108-byte sun_path limit.
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gonbd-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "nbd.sock")
}

// sparseImage creates a sparse image of size bytes.
func sparseImage(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
	return path
}

// randomImage creates an image of size bytes of seeded random data.
func randomImage(t *testing.T, size int64, seed uint64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "random.img")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()

	src := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, err = io.CopyN(f, src, size)
	require.NoError(t, err)
	return path
}

// fileBytes reads a whole file.
func fileBytes(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return data
}

// sameFiles fails the test unless two files have the same content.
func sameFiles(t *testing.T, want, got string) {
	t.Helper()
	mustRun(t, "cmp", want, got)
}

// heldClient is a qemu-io session that keeps one connection open until
// release closes its stdin.
type heldClient struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan error
}

// holdClient connects qemu-io to uri and returns once the connection is
// up, which qemu-io shows by printing its prompt.
func holdClient(t *testing.T, uri string) *heldClient {
	t.Helper()
	cmd := exec.Command(requireTool(t, "qemu-io"), "-f", "raw", uri)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())

	h := &heldClient{cmd: cmd, stdin: stdin, done: make(chan error, 1)}
	prompt := make(chan bool, 1)
	go func() {
		r := bufio.NewReader(stdout)
		buf := make([]byte, len("qemu-io> "))
		_, err := io.ReadFull(r, buf)
		prompt <- err == nil && string(buf) == "qemu-io> "
		_, _ = io.Copy(io.Discard, r)
		h.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		h.release()
	})

	select {
	case ok := <-prompt:
		if !ok {
			t.Fatalf("qemu-io could not connect to %s:\n%s", uri, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("qemu-io not connected to %s after 30s:\n%s", uri, stderr.String())
	}
	return h
}

// release closes the session and waits for qemu-io to exit.
func (h *heldClient) release() {
	if h.stdin != nil {
		h.stdin.Close()
		h.stdin = nil
		select {
		case <-h.done:
		case <-time.After(30 * time.Second):
			_ = h.cmd.Process.Kill()
		}
	}
}

// oneLine fails the test unless s is exactly one line.
func oneLine(t *testing.T, s string) {
	t.Helper()
	require.Equal(t, 1, strings.Count(s, "\n"), "expected one line, got %q", s)
	require.True(t, strings.HasSuffix(s, "\n"), "expected one line, got %q", s)
}
