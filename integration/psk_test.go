package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/gonbd/gonbd/export/memory"
	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// NOTE: cmd/gonbd does not load --object tls-creds-psk yet. These tests
// therefore serve through an in-process nbd.Server with the PSK
// credentials, until the command line can run the guide's qemu-nbd line.

// pskKeys creates a keys.psk for user with psktool, as QEMU's guide does.
func pskKeys(t *testing.T, user string) (dir, file string) {
	t.Helper()
	psktool := requireTool(t, "psktool")
	dir = t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o700))
	file = filepath.Join(dir, tlscreds.PSKKeysFileName)
	mustRun(t, psktool, "-u", user, "-p", file)
	return dir, file
}

// logBuffer collects the server's log lines for assertions.
type logBuffer struct{ syncBuffer }

// servePSK serves a 64 MiB memory disk as exports "" and "/" over TLS-PSK
// on a loopback port and returns the address and the server log.
func servePSK(t *testing.T, dir string) (addr string, logs *logBuffer) {
	t.Helper()
	logs = &logBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})
	creds, err := tlscreds.LoadPSK(tlscreds.PSKConfig{Dir: dir, Endpoint: tlscreds.EndpointServer, Logger: logger})
	require.NoError(t, err)
	disk := memory.New(64<<20, false)
	srv, err := nbd.NewServer(nbd.ServerConfig{
		Exports:    []*nbd.Export{{Name: "", Backend: disk}, {Name: "/", Backend: disk}},
		TLS:        creds,
		TLSMode:    nbd.TLSRequire,
		Persistent: true,
		Logger:     logger,
	})
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		err := <-done
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, nbd.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return l.Addr().String(), logs
}

// qemuPSKArgs are the --object and --image-opts arguments of QEMU's guide.
func qemuPSKArgs(dir, user, addr, export string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return []string{
		"--object", fmt.Sprintf("tls-creds-psk,id=tls0,dir=%s,username=%s,endpoint=client", dir, user),
		"--image-opts",
		fmt.Sprintf("file.driver=nbd,file.host=%s,file.port=%s,file.tls-creds=tls0,file.export=%s", host, port, export),
	}
}

func TestPSKQemuImgInfo(t *testing.T) {
	qemuImg := requireTool(t, "qemu-img")
	dir, _ := pskKeys(t, "rich")
	addr, logs := servePSK(t, dir)

	args := append([]string{"info", "--output=json"}, qemuPSKArgs(dir, "rich", addr, "/")...)
	out := mustRun(t, qemuImg, args...)
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &info), out)
	assert.Equal(t, int64(64<<20), info.VirtualSize)
	assert.Contains(t, logs.String(), "rich")
}

func TestPSKQemuIoWriteRead(t *testing.T) {
	qemuIo := requireTool(t, "qemu-io")
	dir, _ := pskKeys(t, "qemu")
	addr, _ := servePSK(t, dir)

	args := append([]string{"-c", "write -P 0xab 1M 4M", "-c", "read -P 0xab 1M 4M", "-c", "read -P 0 0 1M"},
		qemuPSKArgs(dir, "qemu", addr, "")...)
	out := mustRun(t, qemuIo, args...)
	assert.Contains(t, out, "wrote 4194304/4194304 bytes")
	assert.NotContains(t, out, "Pattern verification failed")
}

func TestPSKNbdinfo(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	dir, file := pskKeys(t, "alice")
	addr, logs := servePSK(t, dir)

	out := mustRun(t, nbdinfo, "--json", fmt.Sprintf("nbds://alice@%s/?tls-psk-file=%s", addr, file))
	var info struct {
		Exports []struct {
			Size int64 `json:"export-size"`
		} `json:"exports"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &info), out)
	require.Len(t, info.Exports, 1)
	assert.Equal(t, int64(64<<20), info.Exports[0].Size)
	assert.Contains(t, logs.String(), "alice")
}

func TestPSKNbdinfoWrongKey(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	dir, _ := pskKeys(t, "alice")
	_, other := pskKeys(t, "alice")
	addr, logs := servePSK(t, dir)

	r := run(t, nbdinfo, fmt.Sprintf("nbds://alice@%s/?tls-psk-file=%s", addr, other))
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, logs.String(), "TLS-PSK handshake failed")
	assert.Contains(t, logs.String(), "identity=alice")
}

func TestPSKNbdcopyBothDirections(t *testing.T) {
	nbdcopy := requireTool(t, "nbdcopy")
	dir, file := pskKeys(t, "alice")
	addr, _ := servePSK(t, dir)
	uri := fmt.Sprintf("nbds://alice@%s/?tls-psk-file=%s", addr, file)

	src := randomImage(t, 64<<20, 7)
	mustRun(t, nbdcopy, src, uri)
	out := filepath.Join(t.TempDir(), "back.img")
	mustRun(t, nbdcopy, uri, out)
	sameFiles(t, src, out)
}

// TestPSKPlaintextClientRefused checks that TLSRequire turns away a client
// that does not start TLS.
func TestPSKPlaintextClientRefused(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	dir, _ := pskKeys(t, "alice")
	addr, logs := servePSK(t, dir)
	r := run(t, nbdinfo, "nbd://"+addr+"/")
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, logs.String(), "reply=NBD_REP_ERR_TLS_REQD")
}
