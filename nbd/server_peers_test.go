package nbd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gonbd/gonbd/internal/testenv"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requirePeer returns the path of a peer tool, failing the test under CI=true
// and skipping it otherwise when the tool is missing.
var requirePeer = testenv.RequireTool

// runPeer runs a peer tool with a one-minute limit and returns its
// standard output; it fails the test on a non-zero exit.
func runPeer(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, requirePeer(t, name), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	require.NoError(t, err, "%s %s\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), stdout.String(), stderr.String())
	return stdout.String()
}

// startServer serves cfg on l in the background and shuts it down at
// test cleanup.
func startServer(t *testing.T, cfg ServerConfig, l net.Listener) *Server {
	t.Helper()
	cfg.Persistent = true
	if cfg.Logger == nil {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "nbd", Level: hclog.Debug, Output: testLogWriter{t}})
	}
	s, err := NewServer(cfg)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Backends that fail on purpose make Shutdown's sync fail; only
		// a shutdown that timed out is a test failure here.
		assert.NotErrorIs(t, s.Shutdown(ctx), context.DeadlineExceeded)
		err := <-done
		assert.True(t, errors.Is(err, ErrServerClosed), "Serve returned %v", err)
	})
	return s
}

// testLogWriter sends server logs to the test log.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func listenTCP(t *testing.T) (net.Listener, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return l, fmt.Sprintf("nbd://%s", l.Addr())
}

func listenUnix(t *testing.T) (net.Listener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	return l, "nbd+unix:///?socket=" + path
}

func TestPeerNbdinfoJSON(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen func(*testing.T) (net.Listener, string)
	}{{"tcp", listenTCP}, {"unix", listenUnix}} {
		t.Run(tc.name, func(t *testing.T) {
			l, uri := tc.listen(t)
			startServer(t, ServerConfig{Exports: []*Export{{Name: "", Description: "test disk", Backend: newTestBackend(1 << 20)}}}, l)

			out := runPeer(t, "nbdinfo", "--json", uri)
			var info struct {
				Protocol   string `json:"protocol"`
				TLS        bool   `json:"TLS"`
				Structured bool   `json:"structured"`
				Exports    []struct {
					Size        int64    `json:"export-size"`
					Description string   `json:"description"`
					Contexts    []string `json:"contexts"`
					ReadOnly    bool     `json:"is_read_only"`
					CanTrim     bool     `json:"can_trim"`
					CanZero     bool     `json:"can_zero"`
					CanFastZero bool     `json:"can_fast_zero"`
					CanCache    bool     `json:"can_cache"`
					CanMulti    bool     `json:"can_multi_conn"`
					CanDF       bool     `json:"can_df"`
					CanFUA      bool     `json:"can_fua"`
					CanFlush    bool     `json:"can_flush"`
					MinBlock    int      `json:"block_size_minimum"`
					PrefBlock   int      `json:"block_size_preferred"`
					MaxBlock    int      `json:"block_size_maximum"`
				} `json:"exports"`
			}
			require.NoError(t, json.Unmarshal([]byte(out), &info), out)
			assert.Equal(t, "newstyle-fixed", info.Protocol)
			assert.True(t, info.Structured)
			require.Len(t, info.Exports, 1)
			e := info.Exports[0]
			assert.Equal(t, int64(1<<20), e.Size)
			assert.Equal(t, "test disk", e.Description)
			assert.Contains(t, e.Contexts, "base:allocation")
			assert.False(t, e.ReadOnly)
			assert.True(t, e.CanTrim)
			assert.True(t, e.CanZero)
			assert.True(t, e.CanFastZero)
			assert.True(t, e.CanCache)
			assert.True(t, e.CanMulti)
			assert.True(t, e.CanDF)
			assert.True(t, e.CanFUA)
			assert.True(t, e.CanFlush)
			assert.Equal(t, 1, e.MinBlock)
			assert.Equal(t, 4096, e.PrefBlock)
			assert.Equal(t, 32<<20, e.MaxBlock)
		})
	}
}

func TestPeerQemuIOWriteRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen func(*testing.T) (net.Listener, string)
	}{{"tcp", listenTCP}, {"unix", listenUnix}} {
		t.Run(tc.name, func(t *testing.T) {
			l, uri := tc.listen(t)
			b := newTestBackend(1 << 20)
			startServer(t, ServerConfig{Exports: []*Export{{Name: "", Backend: b}}}, l)

			out := runPeer(t, "qemu-io", "-f", "raw", "-c", "write -P 0xab 0 64k", "-c", "read -P 0xab 0 64k", "-c", "flush", uri)
			assert.Contains(t, out, "wrote 65536/65536 bytes")
			assert.Contains(t, out, "read 65536/65536 bytes")
			data, _, _ := b.snapshot()
			assert.Equal(t, bytes.Repeat([]byte{0xab}, 64<<10), data[:64<<10])
		})
	}
}

func TestPeerNbdinfoMap(t *testing.T) {
	l, uri := listenTCP(t)
	b := newTestBackend(1 << 20)
	copy(b.data, "data")
	require.NoError(t, b.Zero(8192, 16384, 1))
	startServer(t, ServerConfig{Exports: []*Export{{Name: "", Backend: b}}}, l)

	out := runPeer(t, "nbdinfo", "--map", uri)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	assert.Equal(t, []string{"0", "8192", "0", "data"}, strings.Fields(lines[0]))
	assert.Equal(t, []string{"8192", "16384", "3", "hole,zero"}, strings.Fields(lines[1]))
	assert.Equal(t, []string{"24576", "1024000", "0", "data"}, strings.Fields(lines[2]))
}

func TestPeerNbdinfoMapAllocationDepth(t *testing.T) {
	l, uri := listenUnix(t)
	b := newTestBackend(1 << 20)
	require.NoError(t, b.Zero(0, 4096, 1))
	startServer(t, ServerConfig{Exports: []*Export{{Name: "", Backend: b, AllocationDepth: true}}}, l)

	out := runPeer(t, "nbdinfo", "--map=qemu:allocation-depth", uri)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	assert.Equal(t, []string{"0", "4096", "0", "absent"}, strings.Fields(lines[0]))
	assert.Equal(t, []string{"4096", "1044480", "1", "local"}, strings.Fields(lines[1]))
}

func TestPeerNbdinfoList(t *testing.T) {
	l, uri := listenTCP(t)
	startServer(t, testConfig(), l)
	out := runPeer(t, "nbdinfo", "--list", "--json", uri)
	var list struct {
		Exports []struct {
			Name        string `json:"export-name"`
			Description string `json:"description"`
			ReadOnly    bool   `json:"is_read_only"`
		} `json:"exports"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &list), out)
	require.Len(t, list.Exports, 2)
	assert.Equal(t, "", list.Exports[0].Name)
	assert.Equal(t, "default disk", list.Exports[0].Description)
	assert.Equal(t, "plain", list.Exports[1].Name)
	assert.True(t, list.Exports[1].ReadOnly)
}

func TestPeerTLS(t *testing.T) {
	pki := getTestPKI(t)
	dir := pki.writeClientDir(t)
	l, _ := listenTCP(t)
	port := l.Addr().(*net.TCPAddr).Port
	b := newTestBackend(1 << 20)
	startServer(t, ServerConfig{
		Exports: []*Export{{Name: "disk", Backend: b}},
		TLS:     pki.tlsServer(false),
		TLSMode: TLSRequire,
	}, l)

	out := runPeer(t, "nbdinfo", "--json", fmt.Sprintf("nbds://localhost:%d/disk?tls-certificates=%s", port, dir))
	var info struct {
		TLS bool `json:"TLS"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &info), out)
	assert.True(t, info.TLS)

	out = runPeer(t, "qemu-io",
		"--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+dir,
		"--image-opts", fmt.Sprintf("driver=nbd,host=localhost,port=%d,export=disk,tls-creds=tls0", port),
		"-c", "write -P 0x5a 4096 8k", "-c", "read -P 0x5a 4096 8k")
	assert.Contains(t, out, "read 8192/8192 bytes")
	data, _, _ := b.snapshot()
	assert.Equal(t, bytes.Repeat([]byte{0x5a}, 8192), data[4096:12288])

	// A plaintext client is refused.
	r := exec.Command(requirePeer(t, "nbdinfo"), fmt.Sprintf("nbd://localhost:%d/disk", port))
	assert.Error(t, r.Run())
}

// TestPeerNbdcopy copies an image into the server and back out with
// nbdcopy, which uses several connections, many requests in flight,
// block status and write zeroes.
func TestPeerNbdcopy(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	image := make([]byte, 8<<20)
	for i := 0; i < len(image); i += 3 << 20 {
		copy(image[i:], bytes.Repeat([]byte{byte(i>>20) + 1}, 1<<20))
	}
	require.NoError(t, os.WriteFile(src, image, 0o600))

	l, uri := listenUnix(t)
	b := newTestBackend(len(image))
	startServer(t, ServerConfig{Exports: []*Export{{Name: "", Backend: b}}}, l)

	runPeer(t, "nbdcopy", "--connections=4", "--requests=16", src, uri)
	data, _, _ := b.snapshot()
	require.Equal(t, image, data)

	dst := filepath.Join(dir, "dst.img")
	runPeer(t, "nbdcopy", uri, dst)
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	assert.Equal(t, image, got)
}
