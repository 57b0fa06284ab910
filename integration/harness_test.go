// Package integration drives the built gonbd binaries with real peers
// (qemu-img, qemu-io, qemu-nbd, nbdinfo, nbdcopy, nbdkit, gnutls, openssl)
// over loopback TCP and Unix sockets only.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gonbd/gonbd/internal/testenv"
)

// binDir holds gonbd's binaries: $GONBD_BIN, or a temporary directory that
// TestMain builds them into.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	binDir = os.Getenv("GONBD_BIN")
	if binDir == "" {
		dir, err := os.MkdirTemp("", "gonbd-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "integration: create bin dir:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		cmd := exec.Command("go", "build", "-o", dir+"/", "../cmd/...")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "integration: go build ../cmd/...:", err)
			return 1
		}
		binDir = dir
	}
	return m.Run()
}

// bin returns the path of one of gonbd's binaries.
func bin(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(binDir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("binary %s not built: %v", p, err)
	}
	return p
}

// requireTool returns the path of a peer tool, failing the test under CI=true
// and skipping it otherwise when the tool is missing.
var requireTool = testenv.RequireTool

var portMu sync.Mutex

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on loopback: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a bytes.Buffer safe for a process writing while a test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a background process started by a test.
type proc struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

// start runs a process in the background and kills it at test cleanup.
func start(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	p := &proc{
		cmd:    exec.Command(name, args...),
		stdout: &syncBuffer{},
		stderr: &syncBuffer{},
		done:   make(chan struct{}),
	}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s stderr:\n%s", filepath.Base(name), p.stderr.String())
		}
	})
	return p
}

// wait waits up to d for the process to exit and returns its exit code, or
// -1 if it is still running.
func (p *proc) wait(d time.Duration) int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		return -1
	}
}

// waitTCP waits until addr accepts connections or the process exits.
func waitTCP(t testing.TB, p *proc, addr string) {
	t.Helper()
	waitReady(t, p, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, addr)
}

// waitUnix waits until the Unix socket path exists or the process exits.
func waitUnix(t testing.TB, p *proc, path string) {
	t.Helper()
	waitReady(t, p, func() bool {
		_, err := os.Stat(path)
		return err == nil
	}, path)
}

func waitReady(t testing.TB, p *proc, ready func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s was ready: %v\nstderr:\n%s", p.cmd.Path, what, p.err, p.stderr.String())
		default:
		}
		if ready() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not ready after 15s\nstderr:\n%s", what, p.stderr.String())
}

// result is the outcome of a command run to completion.
type result struct {
	stdout, stderr string
	code           int
}

// run runs a command to completion with a 2-minute limit.
func run(t testing.TB, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else {
			t.Fatalf("run %s %s: %v", name, strings.Join(args, " "), err)
		}
	}
	return r
}

// mustRun runs a command and fails the test unless it exits 0.
func mustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	r := run(t, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}
