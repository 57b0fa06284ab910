package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests run the commands of QEMU's TLS guide ("TLS setup for network
// services" in QEMU's system documentation) with gonbd in place of
// qemu-nbd, and run each QEMU-side command against qemu-nbd with the same
// credentials as a control.

// guideCA is the guide's CA template.
const guideCA = `cn = Name of your organization
ca
cert_signing_key
`

// guideServer is the guide's server template with localhost and 127.0.0.1
// added, the names the tests connect to. The guide's example addresses
// stay as extra subject alternative names, and no traffic goes to them.
const guideServer = `organization = Name  of your organization
cn = localhost
dns_name = localhost
dns_name = hostNNN
dns_name = hostNNN.foo.example.com
ip_address = 127.0.0.1
ip_address = 10.0.1.87
ip_address = 192.8.0.92
ip_address = 2620:0:cafe::87
ip_address = 2001:24::92
tls_www_server
encryption_key
signing_key
`

// guideClient is the guide's client template, unchanged.
const guideClient = `country = GB
state = London
locality = City Of London
organization = Name of your organization
cn = hostNNN.foo.example.com
tls_www_client
encryption_key
signing_key
`

// guideBoth is the guide's combined client and server template with
// localhost and 127.0.0.1 added.
const guideBoth = `country = GB
state = London
locality = City Of London
organization = Name of your organization
cn = hostNNN.foo.example.com
dns_name = localhost
dns_name = hostNNN
dns_name = hostNNN.foo.example.com
ip_address = 127.0.0.1
ip_address = 10.0.1.87
ip_address = 192.8.0.92
ip_address = 2620:0:cafe::87
ip_address = 2001:24::92
tls_www_server
tls_www_client
encryption_key
signing_key
`

// guideClientIdentity is the distinguished name of the guide's client
// certificate in the order QEMU 7.2's authz objects match it.
const guideClientIdentity = "C=GB,ST=London,L=City Of London,O=Name of your organization,CN=hostNNN.foo.example.com"

// guidePKI is a CA and the certificates the guide issues, copied into
// directories in the layout tls-creds-x509 reads.
type guidePKI struct {
	work   string // ca-key.pem, ca-cert.pem, the templates and issued files
	server string // ca-cert.pem, server-cert.pem, server-key.pem
	client string // ca-cert.pem, client-cert.pem, client-key.pem
	both   string // the combined certificate saved as server-* and client-*
}

// newGuidePKI runs the guide's certtool commands. certtool makes RSA keys
// by default, which matters: GnuTLS clients pick RSA client certificates
// by rules that ECDSA ones escape.
func newGuidePKI(t *testing.T) guidePKI {
	t.Helper()
	root := t.TempDir()
	p := guidePKI{
		work:   filepath.Join(root, "ca"),
		server: filepath.Join(root, "server"),
		client: filepath.Join(root, "client"),
		both:   filepath.Join(root, "both"),
	}
	for _, dir := range []string{p.work, p.server, p.client, p.both} {
		require.NoError(t, os.Mkdir(dir, 0o700))
	}

	certtoolShell(t, p.work, `certtool --generate-privkey > ca-key.pem`)
	writeTemplate(t, p.work, "ca.info", guideCA)
	certtoolShell(t, p.work, `certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info --outfile ca-cert.pem`)
	p.issue(t, "server-hostNNN", guideServer)
	p.issue(t, "client-hostNNN", guideClient)
	p.issue(t, "both-hostNNN", guideBoth)

	p.install(t, p.server, "server-hostNNN", "server")
	p.install(t, p.client, "client-hostNNN", "client")
	p.install(t, p.both, "both-hostNNN", "server")
	p.install(t, p.both, "both-hostNNN", "client")
	return p
}

// issue runs the guide's --generate-privkey and --generate-certificate
// commands for NAME-key.pem and NAME-cert.pem with template.
func (p guidePKI) issue(t *testing.T, name, template string) {
	t.Helper()
	writeTemplate(t, p.work, name+".info", template)
	certtoolShell(t, p.work, fmt.Sprintf(`certtool --generate-privkey > %[1]s-key.pem
certtool --generate-certificate --load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem \
	--load-privkey %[1]s-key.pem --template %[1]s.info --outfile %[1]s-cert.pem`, name))
}

// install copies ca-cert.pem and NAME-cert.pem / NAME-key.pem into dir as
// ROLE-cert.pem / ROLE-key.pem, the names the guide gives them.
func (p guidePKI) install(t *testing.T, dir, name, role string) {
	t.Helper()
	copyFile(t, filepath.Join(p.work, "ca-cert.pem"), filepath.Join(dir, "ca-cert.pem"))
	copyFile(t, filepath.Join(p.work, name+"-cert.pem"), filepath.Join(dir, role+"-cert.pem"))
	copyFile(t, filepath.Join(p.work, name+"-key.pem"), filepath.Join(dir, role+"-key.pem"))
}

// clientDir issues a client certificate from template and returns a new
// client directory with it and the CA certificate.
func (p guidePKI) clientDir(t *testing.T, name, template string) string {
	t.Helper()
	p.issue(t, name, template)
	dir := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.Mkdir(dir, 0o700))
	p.install(t, dir, name, "client")
	return dir
}

func writeTemplate(t *testing.T, dir, name, text string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600))
}

// certtoolShell runs guide commands with sh in dir.
func certtoolShell(t *testing.T, dir, script string) {
	t.Helper()
	requireTool(t, "certtool")
	mustRun(t, "sh", "-c", "set -e\ncd "+shellQuote(dir)+"\n"+script)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// optValue escapes a value for QEMU's KEY=VALUE,... syntax.
func optValue(s string) string {
	return strings.ReplaceAll(s, ",", ",,")
}

// x509Object is an --object tls-creds-x509 argument with id tls0.
func x509Object(dir, endpoint string, extra ...string) string {
	s := "tls-creds-x509,id=tls0,dir=" + optValue(dir) + ",endpoint=" + endpoint
	for _, e := range extra {
		s += "," + e
	}
	return s
}

// pskObject is an --object tls-creds-psk argument with id tls0. An empty
// user leaves out username=.
func pskObject(dir, endpoint, user string) string {
	s := "tls-creds-psk,id=tls0,dir=" + optValue(dir) + ",endpoint=" + endpoint
	if user != "" {
		s += ",username=" + user
	}
	return s
}

// guideImage creates image.qcow2 with qemu-img, as the guide's PSK example
// serves, with 1 MiB of 0x5a at offset 1 MiB so that clients can check
// what they read.
func guideImage(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "image.qcow2")
	mustRun(t, requireTool(t, "qemu-img"), "create", "-q", "-f", "qcow2", path, "64M")
	mustRun(t, requireTool(t, "qemu-io"), "-f", "qcow2", "-c", "write -q -P 0x5a 1M 1M", path)
	return path
}

// nbdServer is gonbd or qemu-nbd serving on a loopback port.
type nbdServer struct {
	*proc
	tool string
	port int
}

// startServer starts tool ("gonbd" or "qemu-nbd") persistent on a free
// loopback port with args, which end with the image.
func startServer(t *testing.T, tool string, args ...string) nbdServer {
	t.Helper()
	path := bin(t, "gonbd")
	if tool != "gonbd" {
		path = requireTool(t, tool)
	}
	port := freePort(t)
	full := append([]string{"-t", "-b", "127.0.0.1", "-p", strconv.Itoa(port)}, args...)
	p := start(t, path, full...)
	waitTCP(t, p, fmt.Sprintf("127.0.0.1:%d", port))
	return nbdServer{proc: p, tool: tool, port: port}
}

// listArgs are the -b and -p arguments that make gonbd -L or qemu-nbd -L
// reach the server as localhost.
func (s nbdServer) listArgs() []string {
	return []string{"-b", "localhost", "-p", strconv.Itoa(s.port)}
}

// imageOpts is a qemu-img --image-opts string for the server's export
// with TLS credentials tls0, plus extra driver options.
func (s nbdServer) imageOpts(export string, extra ...string) string {
	opts := fmt.Sprintf("driver=nbd,host=localhost,port=%d,tls-creds=tls0,export=%s", s.port, optValue(export))
	for _, e := range extra {
		opts += "," + e
	}
	return opts
}

// guideServers starts gonbd and, as the control, qemu-nbd with the same
// arguments, each on its own copy of the image (qemu-nbd locks it).
func guideServers(t *testing.T, args ...string) []nbdServer {
	t.Helper()
	var servers []nbdServer
	for _, tool := range []string{"gonbd", "qemu-nbd"} {
		full := append(append([]string{}, args...), guideImage(t))
		servers = append(servers, startServer(t, tool, full...))
	}
	return servers
}

// waitProcLog waits up to 10 seconds for the server's stderr, after the first
// from bytes, to contain want, and returns that part of the log.
func waitProcLog(p *proc, from int, want string) string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		log := p.stderr.String()[from:]
		if strings.Contains(log, want) || time.Now().After(deadline) {
			return log
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGuideX509 serves the guide's certificates with gonbd and qemu-nbd
// and runs QEMU's and libnbd's clients and gonbd -L against both.
func TestGuideX509(t *testing.T) {
	qemuImg, qemuIO := requireTool(t, "qemu-img"), requireTool(t, "qemu-io")
	nbdinfo, nbdcopy := requireTool(t, "nbdinfo"), requireTool(t, "nbdcopy")
	qemuNbd, gonbd := requireTool(t, "qemu-nbd"), bin(t, "gonbd")
	pki := newGuidePKI(t)

	for _, pair := range []struct {
		name           string
		server, client string
	}{
		{"SeparateCertificates", pki.server, pki.client},
		{"CombinedCertificate", pki.both, pki.both},
	} {
		t.Run(pair.name, func(t *testing.T) {
			servers := guideServers(t, "--object", x509Object(pair.server, "server"), "--tls-creds", "tls0")
			clientObj := x509Object(pair.client, "client")

			for _, s := range servers {
				t.Run(s.tool, func(t *testing.T) {
					out := mustRun(t, qemuImg, "info", "--object", clientObj, "--image-opts", s.imageOpts(""))
					assert.Contains(t, out, "virtual size: 64 MiB (67108864 bytes)")

					out = mustRun(t, qemuIO, "--object", clientObj, "--image-opts", s.imageOpts(""),
						"-c", "read -P 0x5a 1M 1M", "-c", "write -P 0xa5 8M 64k", "-c", "read -P 0xa5 8M 64k")
					assert.NotContains(t, out, "Pattern verification failed")

					uri := fmt.Sprintf("nbds://localhost:%d/?tls-certificates=%s", s.port, pair.client)
					out = mustRun(t, nbdinfo, uri)
					assert.Contains(t, out, "export-size: 67108864")
					assert.Contains(t, out, "protocol: newstyle-fixed with TLS")

					copied := filepath.Join(t.TempDir(), "copy.raw")
					mustRun(t, nbdcopy, uri, copied)
					data := fileBytes(t, copied)
					require.Len(t, data, 64<<20)
					assert.Equal(t, strings.Repeat("\x5a", 1<<20), string(data[1<<20:2<<20]))

					listArgs := append([]string{"-L", "--object", clientObj, "--tls-creds", "tls0"}, s.listArgs()...)
					want := mustRun(t, qemuNbd, listArgs...)
					got := run(t, gonbd, listArgs...)
					require.Equal(t, 0, got.code, "gonbd -L: %s", got.stderr)
					assert.Empty(t, got.stderr)
					assert.Equal(t, want, got.stdout, "gonbd -L output differs from qemu-nbd -L")
				})
			}
		})
	}
}

// TestGuidePSK runs the guide's PSK example: psktool, the qemu-nbd line
// with gonbd in its place, and the qemu-img line, with qemu-nbd as the
// control. Then qemu-nbd serves and gonbd -L and gonbdinfo are clients.
func TestGuidePSK(t *testing.T) {
	qemuImg, qemuNbd := requireTool(t, "qemu-img"), requireTool(t, "qemu-nbd")
	gonbd, gonbdinfo := bin(t, "gonbd"), bin(t, "gonbdinfo")
	keys := filepath.Join(t.TempDir(), "keys")
	mustRun(t, "mkdir", "-m", "0700", keys)
	mustRun(t, requireTool(t, "psktool"), "-u", "rich", "-p", filepath.Join(keys, "keys.psk"))

	servers := guideServers(t, "-x", "/", "--object", pskObject(keys, "server", ""), "--tls-creds", "tls0")
	clientObj := pskObject(keys, "client", "rich")
	for _, s := range servers {
		t.Run(s.tool, func(t *testing.T) {
			out := mustRun(t, qemuImg, "info", "--object", clientObj, "--image-opts",
				fmt.Sprintf("file.driver=nbd,file.host=localhost,file.port=%d,file.tls-creds=tls0,file.export=/", s.port))
			assert.Contains(t, out, "virtual size: 64 MiB (67108864 bytes)")

			listArgs := append([]string{"-L", "--object", clientObj, "--tls-creds", "tls0"}, s.listArgs()...)
			want := mustRun(t, qemuNbd, listArgs...)
			got := run(t, gonbd, listArgs...)
			require.Equal(t, 0, got.code, "gonbd -L: %s", got.stderr)
			assert.Empty(t, got.stderr)
			assert.Equal(t, want, got.stdout, "gonbd -L output differs from qemu-nbd -L")
			assert.Contains(t, got.stdout, " export: '/'\n")

			// gonbdinfo with the QEMU object and with an NBD URI that
			// names the user and the keys file.
			out = mustRun(t, gonbdinfo, "--object", clientObj, "--tls-creds", "tls0",
				fmt.Sprintf("nbd://localhost:%d//", s.port))
			assert.Contains(t, out, "export-size: 67108864")
			out = mustRun(t, gonbdinfo, fmt.Sprintf("nbds://rich@localhost:%d//?tls-psk-file=%s", s.port,
				filepath.Join(keys, "keys.psk")))
			assert.Contains(t, out, "export-size: 67108864")
		})
	}
}
