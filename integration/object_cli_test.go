package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests give gonbd mistaken --object command lines. Each mistake
// must end gonbd with exit code 1 and one line on stderr that names the
// object, the property and the value, before gonbd opens a socket. The
// same lines go to qemu-nbd, which must reject or accept them alike
// except where a row notes otherwise.

// launchOutcome is how a server command ended within its time limit.
type launchOutcome struct {
	// listening is true if the server opened its socket; it was then
	// killed.
	listening      bool
	code           int
	stdout, stderr string
}

// launch starts a server command and waits up to 15 seconds until it
// exits or ready reports that it listens. A listening server is killed.
func launch(t *testing.T, path string, ready func() bool, args ...string) launchOutcome {
	t.Helper()
	p := start(t, path, args...)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return launchOutcome{code: p.cmd.ProcessState.ExitCode(), stdout: p.stdout.String(), stderr: p.stderr.String()}
		default:
		}
		if ready() {
			_ = p.cmd.Process.Kill()
			<-p.done
			return launchOutcome{listening: true, code: -1, stdout: p.stdout.String(), stderr: p.stderr.String()}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s neither exited nor listened within 15s\nstderr:\n%s", path, p.stderr.String())
	return launchOutcome{}
}

// launchUnix runs a server with -k and a fresh socket path and returns the
// outcome and whether the socket file exists afterwards.
func launchUnix(t *testing.T, path string, args ...string) (launchOutcome, bool) {
	t.Helper()
	sock := socketPath(t)
	full := append([]string{"-k", sock}, args...)
	out := launch(t, path, func() bool { return fileExists(sock) }, full...)
	return out, fileExists(sock)
}

// launchTCP runs a server with -b 127.0.0.1 and a free port and returns
// the outcome and whether the port was free again afterwards.
func launchTCP(t *testing.T, path string, args ...string) (launchOutcome, bool) {
	t.Helper()
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	full := append([]string{"-b", "127.0.0.1", "-p", strconv.Itoa(port)}, args...)
	out := launch(t, path, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, full...)
	l, err := net.Listen("tcp", addr)
	if err == nil {
		l.Close()
	}
	return out, err == nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// objectFixture is credential directories for --object lines.
type objectFixture struct {
	x509, psk, empty, commaDir string
}

func newObjectFixture(t *testing.T) objectFixture {
	t.Helper()
	f := objectFixture{
		x509:  filepath.Join(t.TempDir(), "pki"),
		psk:   pskDir(t, "rich"),
		empty: t.TempDir(),
	}
	mustRun(t, bin(t, "gonbd-creds"), "x509", "--dir", f.x509, "--hostname", "localhost", "--ip", "127.0.0.1")

	// A keys directory whose name contains a comma, which QEMU's
	// KEY=VALUE syntax needs written as ",,".
	f.commaDir = filepath.Join(t.TempDir(), "ke,ys")
	require.NoError(t, os.Mkdir(f.commaDir, 0o700))
	copyFile(t, filepath.Join(f.psk, "keys.psk"), filepath.Join(f.commaDir, "keys.psk"))
	return f
}

// objectCase is one gonbd command line without the address and image.
type objectCase struct {
	name string
	args []string
	// message is what gonbd's one line of stderr must contain; "" for a
	// line gonbd accepts.
	message string
	// qemuAccepts is whether qemu-nbd 7.2 serves with the same line.
	qemuAccepts bool
}

func (f objectFixture) cases() []objectCase {
	psk := "tls-creds-psk,id=tls0,endpoint=server,dir=" + f.psk
	x509 := "tls-creds-x509,id=tls0,endpoint=server,dir=" + f.x509
	creds := []string{"--tls-creds", "tls0"}
	with := func(objects ...string) []string {
		var args []string
		for _, o := range objects {
			args = append(args, "--object", o)
		}
		return append(args, creds...)
	}
	return []objectCase{
		{name: "UnknownType", args: with("tls-creds-foo,id=tls0"),
			message: `--object tls0: unknown object type "tls-creds-foo"`},
		{name: "DuplicateID", args: with(psk, psk),
			message: "--object tls0 (tls-creds-psk): duplicate id"},
		{name: "MisspelledProperty", args: with("tls-creds-psk,id=tls0,endpoint=server,dri=" + f.psk),
			message: `--object tls0 (tls-creds-psk): unknown property "dri": did you mean dir?`},
		{name: "MissingDir", args: with("tls-creds-psk,id=tls0,endpoint=server"),
			message: "--object tls0 (tls-creds-psk): missing property dir"},
		{name: "MissingID", args: with("tls-creds-psk,endpoint=server,dir=" + f.psk),
			message: "--object tls-creds-psk: missing property id"},
		{name: "BadBoolean", args: with(x509 + ",verify-peer=maybe"),
			message: `--object tls0 (tls-creds-x509): property verify-peer: invalid boolean "maybe"`},
		{name: "BadEndpoint", args: with("tls-creds-x509,id=tls0,endpoint=serv,dir=" + f.x509),
			message: `--object tls0 (tls-creds-x509): property endpoint: invalid value "serv"`},
		{name: "UnknownCredsID", args: []string{"--object", psk, "--tls-creds", "tls1"},
			message: `--tls-creds tls1: no TLS credentials with id "tls1"`},
		{name: "ClientEndpoint", args: with("tls-creds-x509,id=tls0,endpoint=client,dir=" + f.x509),
			message: "--tls-creds tls0: TLS credentials tls0 have endpoint=client, but this use needs endpoint=server"},
		{name: "MissingCACert", args: with("tls-creds-x509,id=tls0,endpoint=server,dir=" + f.empty),
			message: "property dir: cannot read credential file " + filepath.Join(f.empty, "ca-cert.pem")},
		{name: "MissingKeysFile", args: with("tls-creds-psk,id=tls0,endpoint=server,dir=" + f.empty),
			message: "property dir: cannot read credential file " + filepath.Join(f.empty, "keys.psk")},
		{name: "ServerUsername", args: with(psk + ",username=rich"),
			message: `property username: "rich" is only for endpoint=client`},
		// qemu-nbd serves anonymous TLS; gonbd rejects credentials that
		// authenticate nobody.
		{name: "TLSCredsAnon", args: with("tls-creds-anon,id=tls0,endpoint=server"),
			message: "TLS credentials tls0 are tls-creds-anon, which authenticate nobody", qemuAccepts: true},
		// qemu-nbd looks the authz object up only when a client connects.
		{name: "UnknownAuthzID", args: append(with(psk), "--tls-authz", "auth0"),
			message: `--tls-authz auth0: no authorization object with id "auth0"`, qemuAccepts: true},
		{name: "AuthzWithoutCreds", args: []string{"--object", "authz-simple,id=auth0,identity=CN=x", "--tls-authz", "auth0"},
			message: "--tls-authz needs --tls-creds"},
		{name: "SingleCommaInDir", args: with("tls-creds-psk,id=tls0,endpoint=server,dir=" + f.commaDir),
			message: `or write ,, for a comma inside the value of dir`},
		{name: "InvalidJSON", args: with(`{"qom-type":"tls-creds-psk","id":"tls0",`),
			message: "--object: invalid JSON"},
		{name: "JSONStringForBoolean", args: with(`{"qom-type":"tls-creds-psk","id":"tls0","endpoint":"server","dir":"` +
			f.psk + `","verify-peer":"yes"}`),
			message: "--object tls0 (tls-creds-psk): property verify-peer: invalid type: expected a boolean"},

		{name: "JSONForm", args: with(`{"qom-type":"tls-creds-psk","id":"tls0","endpoint":"server","dir":"` + f.commaDir + `"}`),
			qemuAccepts: true},
		{name: "EscapedCommaInDir", args: with("tls-creds-psk,id=tls0,endpoint=server,dir=" + optValue(f.commaDir)),
			qemuAccepts: true},
		{name: "ObjectWithoutTLSCreds", args: []string{"--object", psk}, qemuAccepts: true},
	}
}

func TestObjectCommandLines(t *testing.T) {
	gonbd, qemuNbd := bin(t, "gonbd"), requireTool(t, "qemu-nbd")
	f := newObjectFixture(t)
	image := sparseImage(t, 1<<20)

	for _, tc := range f.cases() {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"-f", "raw"}, tc.args...), image)

			unix, sockExists := launchUnix(t, gonbd, args...)
			if tc.message == "" {
				assert.True(t, unix.listening, "gonbd did not listen: %s", unix.stderr)
			} else {
				assert.False(t, unix.listening, "gonbd listened")
				assert.Equal(t, 1, unix.code, "exit code")
				oneLine(t, unix.stderr)
				assert.True(t, strings.HasPrefix(unix.stderr, "gonbd: "), "stderr: %q", unix.stderr)
				assert.Contains(t, unix.stderr, tc.message)
				assert.Empty(t, unix.stdout)
				assert.False(t, sockExists, "gonbd left a socket file")

				tcp, portFree := launchTCP(t, gonbd, args...)
				assert.Equal(t, 1, tcp.code, "exit code with -p")
				assert.Equal(t, unix.stderr, tcp.stderr, "message with -p")
				assert.True(t, portFree, "port not free after gonbd exited")
			}

			qemu, _ := launchUnix(t, qemuNbd, args...)
			assert.Equal(t, tc.qemuAccepts, qemu.listening, "qemu-nbd accepts the line; stderr: %s", qemu.stderr)
		})
	}
}

// TestObjectListErrors checks that gonbd -L and gonbdinfo report an
// --object mistake in one line and connect to nothing: the port they
// name has no server, so a connection attempt would fail differently.
func TestObjectListErrors(t *testing.T) {
	f := newObjectFixture(t)
	port := strconv.Itoa(freePort(t))
	for _, tc := range []struct {
		name    string
		object  string
		message string
	}{
		{"UnknownType", "tls-creds-foo,id=tls0", `--object tls0: unknown object type "tls-creds-foo"`},
		{"ServerEndpoint", "tls-creds-psk,id=tls0,endpoint=server,dir=" + f.psk,
			"TLS credentials tls0 have endpoint=server, but this use needs endpoint=client"},
		{"UnknownUser", "tls-creds-psk,id=tls0,endpoint=client,username=eve,dir=" + f.psk,
			`property username: username "eve" not found in ` + filepath.Join(f.psk, "keys.psk")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list := run(t, bin(t, "gonbd"), "-L", "-b", "127.0.0.1", "-p", port, "--object", tc.object, "--tls-creds", "tls0")
			assert.Equal(t, 1, list.code)
			oneLine(t, list.stderr)
			assert.Contains(t, list.stderr, "gonbd: ")
			assert.Contains(t, list.stderr, tc.message)

			info := run(t, bin(t, "gonbdinfo"), "--object", tc.object, "--tls-creds", "tls0", "nbd://127.0.0.1:"+port+"/")
			assert.Equal(t, 1, info.code)
			oneLine(t, info.stderr)
			assert.Contains(t, info.stderr, "gonbdinfo: ")
			assert.Contains(t, info.stderr, tc.message)
		})
	}
}

// helpProperty matches a property line of --object TYPE,help in QEMU's
// layout, "  name=<type>...".
var helpProperty = regexp.MustCompile(`(?m)^  ([a-z-]+)=<`)

func helpProperties(out string) []string {
	var names []string
	for _, m := range helpProperty.FindAllStringSubmatch(out, -1) {
		names = append(names, m[1])
	}
	sort.Strings(names)
	return names
}

// TestObjectHelp checks --object help and TYPE,help: exit 0 without an
// image, and for each TLS type the property names qemu-nbd lists.
func TestObjectHelp(t *testing.T) {
	gonbd, qemuNbd := bin(t, "gonbd"), requireTool(t, "qemu-nbd")

	t.Run("Types", func(t *testing.T) {
		r := run(t, gonbd, "--object", "help")
		assert.Equal(t, 0, r.code)
		assert.Empty(t, r.stderr)
		assert.True(t, strings.HasPrefix(r.stdout, "List of user creatable objects:\n"), "stdout: %q", r.stdout)
		for _, name := range []string{"authz-simple", "secret", "tls-creds-psk", "tls-creds-x509"} {
			assert.Contains(t, r.stdout, "  "+name+"\n")
		}
	})
	for _, typ := range []string{"tls-creds-psk", "tls-creds-x509", "authz-simple"} {
		t.Run(typ, func(t *testing.T) {
			want := mustRun(t, qemuNbd, "--object", typ+",help")
			r := run(t, gonbd, "--object", typ+",help")
			assert.Equal(t, 0, r.code)
			assert.Empty(t, r.stderr)
			assert.True(t, strings.HasPrefix(r.stdout, typ+" options:\n"), "stdout: %q", r.stdout)
			assert.Equal(t, helpProperties(want), helpProperties(r.stdout))
		})
	}
	t.Run("Gonbdinfo", func(t *testing.T) {
		r := run(t, bin(t, "gonbdinfo"), "--object", "tls-creds-psk,help")
		assert.Equal(t, 0, r.code)
		assert.True(t, strings.HasPrefix(r.stdout, "tls-creds-psk options:\n"), "stdout: %q", r.stdout)
	})
}
