package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests run gonbd -L and qemu-nbd -L with the same arguments against
// TLS servers (gonbd, qemu-nbd and nbdkit, on TCP and Unix sockets) and
// require byte-identical output. gonbdinfo reaches the nbdkit servers with
// an --object and with a URI, as nbdinfo does.

// listServer is a running TLS server and how to reach it.
type listServer struct {
	// address are the -b/-p or -k arguments of -L.
	address []string
	// uri is an nbds:// or nbds+unix:// URI without credentials.
	uri string
}

// listFixture is the credentials the servers and clients share.
type listFixture struct {
	pki  guidePKI
	keys string
}

// startListServer starts tool with args on a Unix socket or a loopback
// port. For nbdkit the arguments go before the plugin, given in args.
func startListServer(t *testing.T, tool string, unix bool, args ...string) listServer {
	t.Helper()
	path := bin(t, "gonbd")
	if tool != "gonbd" {
		path = requireTool(t, tool)
	}

	var s listServer
	var endpoint []string
	if unix {
		sock := socketPath(t)
		s.address = []string{"-k", sock}
		s.uri = "nbds+unix:///?socket=" + sock
		endpoint = []string{"-k", sock}
		if tool == "nbdkit" {
			endpoint = []string{"-U", sock}
		}
	} else {
		port := strconv.Itoa(freePort(t))
		s.address = []string{"-b", "localhost", "-p", port}
		s.uri = "nbds://localhost:" + port + "/"
		endpoint = []string{"-b", "127.0.0.1", "-p", port}
		if tool == "nbdkit" {
			endpoint = []string{"-i", "127.0.0.1", "-p", port}
		}
	}
	if tool == "nbdkit" {
		endpoint = append([]string{"-f", "--exit-with-parent"}, endpoint...)
	} else {
		endpoint = append([]string{"-t"}, endpoint...)
	}

	p := start(t, path, append(endpoint, args...)...)
	if unix {
		waitUnix(t, p, s.address[1])
	} else {
		waitTCP(t, p, "127.0.0.1:"+s.address[3])
	}
	return s
}

// nbdkitExports creates a directory of two files for nbdkit's file plugin,
// which exports each file under its name.
func nbdkitExports(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "exports")
	require.NoError(t, os.Mkdir(dir, 0o700))
	for name, size := range map[string]int64{"alpha": 1 << 20, "beta": 3 << 20} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), make([]byte, size), 0o600))
	}
	return dir
}

// listCase is one server with the client credentials that reach it.
type listCase struct {
	name    string
	tool    string
	unix    bool
	server  func(t *testing.T, f listFixture) []string
	client  func(f listFixture) []string // --object ... --tls-creds tls0 [--tls-hostname ...]
	uriCred func(f listFixture) string   // URI user@ prefix and query for nbdinfo
	// infoModes are the gonbdinfo modes to compare; nil means all of
	// listInfoModes.
	infoModes [][]string
}

// listInfoModes are the gonbdinfo modes TestGonbdinfoNbdkitTLS compares.
var listInfoModes = [][]string{{}, {"--list"}, {"--size"}}

var listCases = []listCase{
	{name: "GonbdX509UnixSocket", tool: "gonbd", unix: true,
		server: func(t *testing.T, f listFixture) []string {
			return []string{"--object", x509Object(f.pki.server, "server"), "--tls-creds", "tls0",
				"-x", "disk", "-D", "a qcow2 image", guideImage(t)}
		},
		client: listX509Client},
	{name: "QemuNbdX509UnixSocket", tool: "qemu-nbd", unix: true,
		server: func(t *testing.T, f listFixture) []string {
			return []string{"--object", x509Object(f.pki.server, "server"), "--tls-creds", "tls0",
				"-x", "disk", "-D", "a qcow2 image", guideImage(t)}
		},
		client: listX509Client},
	{name: "GonbdPSKReadOnly", tool: "gonbd",
		server: func(t *testing.T, f listFixture) []string {
			return []string{"--object", pskObject(f.keys, "server", ""), "--tls-creds", "tls0", "-r", "-A",
				"-x", "ro", guideImage(t)}
		},
		client: listPSKClient},
	{name: "NbdkitPSK", tool: "nbdkit",
		server: func(t *testing.T, f listFixture) []string {
			return []string{"--tls=require", "--tls-psk=" + filepath.Join(f.keys, "keys.psk"), "memory", "8M"}
		},
		client:  listPSKClient,
		uriCred: func(f listFixture) string { return "rich@|tls-psk-file=" + filepath.Join(f.keys, "keys.psk") }},
	{name: "NbdkitX509Exports", tool: "nbdkit",
		server: func(t *testing.T, f listFixture) []string {
			return []string{"--tls=require", "--tls-certificates=" + f.pki.server, "--tls-verify-peer",
				"file", "dir=" + nbdkitExports(t)}
		},
		client:  listX509Client,
		uriCred: func(f listFixture) string { return "|tls-certificates=" + f.pki.client },
		// The file plugin with dir= has no default export.
		infoModes: [][]string{{"--list"}}},
	{name: "NbdkitX509UnixSocket", tool: "nbdkit", unix: true,
		server: func(t *testing.T, f listFixture) []string {
			return []string{"--tls=require", "--tls-certificates=" + f.pki.server, "--tls-verify-peer", "memory", "4M"}
		},
		client:  listX509Client,
		uriCred: func(f listFixture) string { return "|tls-hostname=localhost&tls-certificates=" + f.pki.client }},
}

// listX509Client names localhost, which a Unix socket does not give.
func listX509Client(f listFixture) []string {
	return []string{"--object", x509Object(f.pki.client, "client"), "--tls-creds", "tls0", "--tls-hostname", "localhost"}
}

func listPSKClient(f listFixture) []string {
	return []string{"--object", pskObject(f.keys, "client", "rich"), "--tls-creds", "tls0"}
}

// withCredentials adds the user and query of cred ("USER@|QUERY") to uri.
func withCredentials(uri, cred string) string {
	user, query, _ := strings.Cut(cred, "|")
	uri = strings.Replace(uri, "://", "://"+user, 1)
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	return uri + sep + query
}

// uriLine matches the uri: line of nbdinfo's text output, which names the
// credentials only when the URI carries them.
var uriLine = regexp.MustCompile(`(?m)^\turi: .*\n`)

func withoutURILines(s string) string {
	return uriLine.ReplaceAllString(s, "")
}

func TestListMatchesQemuNbd(t *testing.T) {
	qemuNbd, gonbd := requireTool(t, "qemu-nbd"), bin(t, "gonbd")
	f := listFixture{pki: newGuidePKI(t), keys: pskDir(t, "rich")}

	for _, tc := range listCases {
		t.Run(tc.name, func(t *testing.T) {
			s := startListServer(t, tc.tool, tc.unix, tc.server(t, f)...)
			args := append(append([]string{"-L"}, tc.client(f)...), s.address...)

			want := mustRun(t, qemuNbd, args...)
			got := run(t, gonbd, args...)
			require.Equal(t, 0, got.code, "gonbd -L: %s", got.stderr)
			assert.Empty(t, got.stderr)
			assert.Equal(t, want, got.stdout, "gonbd -L output differs from qemu-nbd -L")

			// Without credentials both fail, and gonbd names the missing flag.
			plain := append([]string{"-L"}, s.address...)
			qemuPlain := run(t, qemuNbd, plain...)
			assert.Equal(t, 1, qemuPlain.code, "qemu-nbd -L without credentials")
			gonbdPlain := run(t, gonbd, plain...)
			assert.Equal(t, 1, gonbdPlain.code, "gonbd -L without credentials")
			oneLine(t, gonbdPlain.stderr)
			assert.Contains(t, gonbdPlain.stderr, "pass --tls-creds")
		})
	}
}

// TestGonbdinfoNbdkitTLS runs gonbdinfo against nbdkit with --tls-psk and
// --tls-certificates, with the credentials as an --object and in the URI,
// and compares the text with nbdinfo's.
func TestGonbdinfoNbdkitTLS(t *testing.T) {
	nbdinfo, gonbdinfo := requireTool(t, "nbdinfo"), bin(t, "gonbdinfo")
	f := listFixture{pki: newGuidePKI(t), keys: pskDir(t, "rich")}

	for _, tc := range listCases {
		if tc.uriCred == nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			s := startListServer(t, tc.tool, tc.unix, tc.server(t, f)...)
			uri := withCredentials(s.uri, tc.uriCred(f))
			modes := tc.infoModes
			if modes == nil {
				modes = listInfoModes
			}
			for _, mode := range modes {
				want := run(t, nbdinfo, append(append([]string{}, mode...), uri)...)
				require.Equal(t, 0, want.code, "nbdinfo %v: %s", mode, want.stderr)

				got := run(t, gonbdinfo, append(append([]string{}, mode...), uri)...)
				assert.Equal(t, 0, got.code, "gonbdinfo %v %s: %s", mode, uri, got.stderr)
				assert.Equal(t, want.stdout, got.stdout, "gonbdinfo %v with URI credentials", mode)

				// The --object form takes a plain nbd URI; the host
				// name for x509 over a Unix socket goes in the URI.
				plainURI := "nbd" + strings.TrimPrefix(s.uri, "nbds")
				if tc.unix {
					plainURI += "&tls-hostname=localhost"
				}
				objectArgs := append([]string{}, tc.client(f)[:4]...)
				got = run(t, gonbdinfo, append(append(objectArgs, mode...), plainURI)...)
				assert.Equal(t, 0, got.code, "gonbdinfo --object %v: %s", mode, got.stderr)
				assert.Equal(t, withoutURILines(want.stdout), withoutURILines(got.stdout), "gonbdinfo %v with --object", mode)
			}
		})
	}
}
