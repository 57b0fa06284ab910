package integration

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSharedAdmitsTwoClients(t *testing.T) {
	img := sparseImage(t, 1<<20)
	srv := serveUnix(t, "-e", "2", "-f", "raw", img)

	first := holdClient(t, srv.uri)
	second := holdClient(t, srv.uri)
	second.release()
	first.release()

	assert.Equal(t, 0, srv.wait(15*time.Second), "without -t the server exits once both clients left")
}

func TestExitAfterLastClient(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	img := sparseImage(t, 1<<20)
	srv := serveTCP(t, "-f", "raw", img)

	// waitTCP's probe connection ends without a handshake; the server must
	// still be up for a real client.
	mustRun(t, nbdinfo, srv.uri)
	assert.Equal(t, 0, srv.wait(15*time.Second), "without -t the server exits after the client leaves")
}

func TestPersistentKeepsServing(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	img := sparseImage(t, 1<<20)
	srv := serveUnix(t, "-t", "-f", "raw", img)

	for range 3 {
		mustRun(t, nbdinfo, "--size", srv.uri)
	}
	assert.Equal(t, -1, srv.wait(100*time.Millisecond), "with -t the server keeps running")
}

func TestSigtermExitsZero(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	img := sparseImage(t, 1<<20)
	srv := serveUnix(t, "-t", "-f", "raw", img)
	mustRun(t, nbdinfo, srv.uri)

	require.NoError(t, srv.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, srv.wait(30*time.Second))
	sock := strings.TrimPrefix(srv.uri, "nbd+unix:///?socket=")
	assert.NoFileExists(t, sock, "the socket file is removed on exit")
}

func TestSigtermWithClientConnected(t *testing.T) {
	img := sparseImage(t, 1<<20)
	srv := serveUnix(t, "-t", "-f", "raw", img)
	holdClient(t, srv.uri)

	require.NoError(t, srv.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, srv.wait(45*time.Second))
}

func TestStaleUnixSocketReplaced(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	sock := socketPath(t)
	stale, err := net.Listen("unix", sock)
	require.NoError(t, err)
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, stale.Close())

	img := sparseImage(t, 1<<20)
	p := start(t, bin(t, "gonbd"), "-t", "-k", sock, "-f", "raw", img)
	uri := "nbd+unix:///?socket=" + sock
	// The stale file exists from the start, so poll with a client.
	deadline := time.Now().Add(15 * time.Second)
	for run(t, nbdinfo, "--size", uri).code != 0 {
		if time.Now().After(deadline) || p.wait(0) != -1 {
			t.Fatalf("gonbd not serving on %s:\n%s", sock, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestIPv6Loopback(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback on this machine: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	img := sparseImage(t, 1<<20)
	p := start(t, bin(t, "gonbd"), "-t", "-b", "::1", "-p", strconv.Itoa(port), "-f", "raw", img)
	addr := net.JoinHostPort("::1", strconv.Itoa(port))
	waitTCP(t, p, addr)

	out := mustRun(t, nbdinfo, "--size", "nbd://"+addr+"/")
	assert.Equal(t, "1048576\n", out)
}

func TestSystemdSocketActivation(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	sock := socketPath(t)
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	f, err := l.(*net.UnixListener).File()
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	img := sparseImage(t, 1<<20)
	// LISTEN_PID must be gonbd's pid: sh sets it to its own ($$), which exec keeps.
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, bin(t, "gonbd"), "-f", "raw", img)
	cmd.ExtraFiles = []*os.File{f}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	f.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})

	mustRun(t, nbdinfo, "--size", "nbd+unix:///?socket="+sock)
	select {
	case err := <-done:
		assert.NoError(t, err, "stderr:\n%s", stderr.String())
		done <- err
	case <-time.After(15 * time.Second):
		t.Fatalf("gonbd did not exit after its client left:\n%s", stderr.String())
	}
}

func TestForkAndPidFile(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	sock := socketPath(t)
	pidFile := filepath.Join(t.TempDir(), "gonbd.pid")
	img := sparseImage(t, 1<<20)

	mustRun(t, bin(t, "gonbd"), "--fork", "--pid-file", pidFile, "-k", sock, "-f", "raw", img)

	pidText, err := os.ReadFile(pidFile)
	require.NoError(t, err, "the pid file exists once --fork returns")
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })

	out := mustRun(t, nbdinfo, "--size", "nbd+unix:///?socket="+sock)
	assert.Equal(t, "1048576\n", out)

	// Without -t the background server exits after its client.
	deadline := time.Now().Add(15 * time.Second)
	for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	assert.Error(t, syscall.Kill(pid, 0), "the forked server is still running")
	assert.NoFileExists(t, pidFile)
}

func TestForkReportsErrors(t *testing.T) {
	r := run(t, bin(t, "gonbd"), "--fork", "-k", socketPath(t), "/nonexistent/disk.img")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "/nonexistent/disk.img")
	oneLine(t, r.stderr)
}

func TestBadInput(t *testing.T) {
	img := sparseImage(t, 1<<20)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	busyPort := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"MissingFile", []string{"-k", socketPath(t), "/nonexistent/disk.img"}, "/nonexistent/disk.img"},
		{"BadPort", []string{"-p", "seventy", img}, `invalid port "seventy"`},
		{"PortInUse", []string{"-b", "127.0.0.1", "-p", busyPort, img}, "address already in use"},
		{"UnknownFormat", []string{"-k", socketPath(t), "-f", "vmdk", img}, `unknown image format "vmdk"`},
		{"BadSize", []string{"-k", socketPath(t), "--image-opts", "driver=memory,size=12Q"}, `invalid size="12Q"`},
		{"BadCache", []string{"--cache=sometimes", img}, `invalid --cache mode "sometimes"`},
		{"NoImage", []string{}, "missing IMAGE argument"},
		{"UnknownFlag", []string{"--frobnicate", img}, "unknown flag: --frobnicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, bin(t, "gonbd"), tt.args...)
			assert.Equal(t, 1, r.code)
			assert.Empty(t, r.stdout)
			assert.Contains(t, r.stderr, tt.want)
			oneLine(t, r.stderr)
		})
	}
}

func TestListExports(t *testing.T) {
	img := sparseImage(t, 1<<20)
	srv := serveUnix(t, "-t", "-x", "disk0", "-D", "first disk", "-f", "raw", img)
	sock := strings.TrimPrefix(srv.uri, "nbd+unix:///?socket=")

	out := mustRun(t, bin(t, "gonbd"), "-L", "-k", sock)
	assert.Contains(t, out, "exports available: 1")
	assert.Contains(t, out, "export: 'disk0'")
	assert.Contains(t, out, "description: first disk")

	want := mustRun(t, requireTool(t, "qemu-nbd"), "-L", "-k", sock)
	assert.Equal(t, want, out, "gonbd -L prints what qemu-nbd -L prints")
}
