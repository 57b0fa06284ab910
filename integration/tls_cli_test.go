package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests connect qemu-img and gonbd -L to a gonbd server with TLS
// mistakes on either side and check what each binary reports: the exit
// code, gonbd's one-line message and the server's log line. The same
// clients run against qemu-nbd with the same credentials as a control
// and must succeed or fail alike.

// tlsFailureCase is one client connection to a server setup.
type tlsFailureCase struct {
	name string
	// setup names the server arguments in tlsFailureSetups.
	setup string
	// object is the client's --object; "" connects without TLS.
	object string
	// imageOpts and listArgs are extra qemu-img driver options and extra
	// gonbd -L arguments.
	imageOpts []string
	listArgs  []string
	// ok is whether the connection must succeed.
	ok bool
	// qemuMessage, listMessage and serverLog are texts that qemu-img's
	// stderr, gonbd -L's one-line stderr and gonbd's log must contain.
	qemuMessage, listMessage, serverLog string
}

// tlsFailureFixture is the credentials of the failure tests.
type tlsFailureFixture struct {
	pki                         guidePKI
	noCert, otherCA, expired    string // client directories
	revokingServer              string // server directory with ca-crl.pem
	keys, wrongKey, unknownUser string // PSK directories
	deniedAuthz, allowedAuthz   string // authz-simple --object arguments
}

func newTLSFailureFixture(t *testing.T) tlsFailureFixture {
	t.Helper()
	f := tlsFailureFixture{pki: newGuidePKI(t)}

	f.noCert = filepath.Join(t.TempDir(), "nocert")
	require.NoError(t, os.Mkdir(f.noCert, 0o700))
	copyFile(t, filepath.Join(f.pki.client, "ca-cert.pem"), filepath.Join(f.noCert, "ca-cert.pem"))

	f.otherCA = otherCAClient(t, f.pki)

	// A certificate that expired in 2020, as certtool writes it from a
	// template with fixed dates.
	f.expired = f.pki.clientDir(t, "expired", guideClient+
		"activation_date = \"2020-01-01 00:00:00\"\nexpiration_date = \"2020-06-01 00:00:00\"\n")

	// The guide's client certificate, revoked by a CRL from the CA.
	f.revokingServer = filepath.Join(t.TempDir(), "crl")
	require.NoError(t, os.Mkdir(f.revokingServer, 0o700))
	f.pki.install(t, f.revokingServer, "server-hostNNN", "server")
	writeTemplate(t, f.pki.work, "crl.info", "crl_next_update = 30\ncrl_number = 1\n")
	certtoolShell(t, f.pki.work, `certtool --generate-crl --load-ca-privkey ca-key.pem --load-ca-certificate ca-cert.pem \
	--load-certificate client-hostNNN-cert.pem --template crl.info --outfile `+shellQuote(filepath.Join(f.revokingServer, "ca-crl.pem")))

	f.keys = pskDir(t, "rich")
	f.wrongKey = pskDir(t, "rich")
	f.unknownUser = pskDir(t, "eve")

	f.deniedAuthz = "authz-simple,id=auth0,identity=CN=nobody.example.com"
	f.allowedAuthz = "authz-simple,id=auth0,identity=" + optValue(guideClientIdentity)
	return f
}

// otherCAClient issues the guide's client certificate from a second CA and
// returns a client directory that trusts the first CA, so that only the
// server can notice the stranger. Both CAs come from the same certtool
// template, so they have the same name.
func otherCAClient(t *testing.T, pki guidePKI) string {
	t.Helper()
	work := t.TempDir()
	certtoolShell(t, work, `certtool --generate-privkey > ca-key.pem`)
	writeTemplate(t, work, "ca.info", guideCA)
	certtoolShell(t, work, `certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info --outfile ca-cert.pem`)
	other := guidePKI{work: work}
	other.issue(t, "client-hostNNN", guideClient)

	dir := filepath.Join(t.TempDir(), "otherca")
	require.NoError(t, os.Mkdir(dir, 0o700))
	other.install(t, dir, "client-hostNNN", "client")
	copyFile(t, filepath.Join(pki.work, "ca-cert.pem"), filepath.Join(dir, "ca-cert.pem"))
	return dir
}

// pskDir runs psktool for user in a new mode 0700 directory.
func pskDir(t *testing.T, user string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.Mkdir(dir, 0o700))
	mustRun(t, requireTool(t, "psktool"), "-u", user, "-p", filepath.Join(dir, "keys.psk"))
	return dir
}

// setups returns the server arguments of each setup name.
func (f tlsFailureFixture) setups() map[string][]string {
	x509 := []string{"--object", x509Object(f.pki.server, "server"), "--tls-creds", "tls0"}
	return map[string][]string{
		"x509":        x509,
		"x509-crl":    {"--object", x509Object(f.revokingServer, "server"), "--tls-creds", "tls0"},
		"authz-deny":  append([]string{"--object", f.deniedAuthz, "--tls-authz", "auth0"}, x509...),
		"authz-allow": append([]string{"--object", f.allowedAuthz, "--tls-authz", "auth0"}, x509...),
		"psk":         {"--object", pskObject(f.keys, "server", ""), "--tls-creds", "tls0"},
	}
}

func (f tlsFailureFixture) cases() []tlsFailureCase {
	client := x509Object(f.pki.client, "client")
	return []tlsFailureCase{
		{name: "PlaintextClient", setup: "x509",
			qemuMessage: "TLS negotiation required before option", listMessage: "pass --tls-creds",
			serverLog: "reply=NBD_REP_ERR_TLS_REQD"},
		{name: "ClientWithoutCertificate", setup: "x509", object: x509Object(f.noCert, "client"),
			listMessage: "certificate required: the server requires a client certificate: put client-cert.pem and client-key.pem",
			serverLog:   "client didn't provide a certificate"},
		{name: "CertificateFromOtherCA", setup: "x509", object: x509Object(f.otherCA, "client", "sanity-check=off"),
			listMessage: "bad certificate: the server rejected this client's certificate", serverLog: `names \"CN=Name of your organization\" as its issuer, but the CA of that name in ca-cert.pem did not sign it`},
		{name: "RevokedCertificate", setup: "x509-crl", object: client,
			listMessage: "bad certificate: the server rejected this client's certificate", serverLog: "is revoked by " + filepath.Join(f.revokingServer, "ca-crl.pem")},
		{name: "ExpiredCertificate", setup: "x509", object: x509Object(f.expired, "client", "sanity-check=off"),
			listMessage: "bad certificate: the server rejected this client's certificate", serverLog: "has expired (valid until 2020-06-01T00:00:00Z)"},
		{name: "WrongHostName", setup: "x509", object: client,
			imageOpts: []string{"tls-hostname=wrong.example.com"}, listArgs: []string{"--tls-hostname", "wrong.example.com"},
			qemuMessage: "Certificate does not match the hostname wrong.example.com",
			listMessage: `does not match host name "wrong.example.com"`, serverLog: "handshake failed"},
		{name: "AuthzDenied", setup: "authz-deny", object: client,
			listMessage: "may have rejected this client's certificate or TLS identity", serverLog: `reason="TLS identity not authorized" identity="` + guideClientIdentity + `"`},
		{name: "AuthzAllowed", setup: "authz-allow", object: client, ok: true,
			serverLog: "tls=yes"},
		{name: "WrongPSKKey", setup: "psk", object: pskObject(f.wrongKey, "client", "rich"),
			qemuMessage: "TLS handshake failed", listMessage: "decrypt_error",
			serverLog: `PSK binder of identity \"rich\" does not verify: the keys differ`},
		{name: "UnknownPSKUser", setup: "psk", object: pskObject(f.unknownUser, "client", "eve"),
			qemuMessage: "TLS handshake failed", listMessage: "unknown_psk_identity",
			serverLog: `unknown PSK identity \"eve\"`},
		{name: "PSKUserRich", setup: "psk", object: pskObject(f.keys, "client", "rich"), ok: true,
			serverLog: "tls=yes"},
	}
}

// qemuImgInfo runs qemu-img info on the server's default export.
func qemuImgInfo(t *testing.T, s nbdServer, object string, opts ...string) result {
	t.Helper()
	args := []string{"info"}
	imageOpts := fmt.Sprintf("driver=nbd,host=localhost,port=%d", s.port)
	if object != "" {
		args = append(args, "--object", object)
		imageOpts += ",tls-creds=tls0"
	}
	for _, o := range opts {
		imageOpts += "," + o
	}
	return run(t, requireTool(t, "qemu-img"), append(args, "--image-opts", imageOpts)...)
}

// gonbdList runs gonbd -L against the server.
func gonbdList(t *testing.T, s nbdServer, object string, extra ...string) result {
	t.Helper()
	args := []string{"-L"}
	if object != "" {
		args = append(args, "--object", object, "--tls-creds", "tls0")
	}
	args = append(append(args, extra...), s.listArgs()...)
	return run(t, bin(t, "gonbd"), args...)
}

func TestTLSFailures(t *testing.T) {
	f := newTLSFailureFixture(t)
	servers := map[string][2]nbdServer{}
	for name, setup := range f.setups() {
		args := append([]string{"-f", "raw"}, setup...)
		gonbd := startServer(t, "gonbd", append(append([]string{"-v"}, args...), sparseImage(t, 16<<20))...)
		control := startServer(t, "qemu-nbd", append(args, sparseImage(t, 16<<20))...)
		servers[name] = [2]nbdServer{gonbd, control}
	}

	for _, tc := range f.cases() {
		t.Run(tc.name, func(t *testing.T) {
			gonbd, control := servers[tc.setup][0], servers[tc.setup][1]
			logStart := len(gonbd.stderr.String())

			info := qemuImgInfo(t, gonbd, tc.object, tc.imageOpts...)
			list := gonbdList(t, gonbd, tc.object, tc.listArgs...)
			if tc.ok {
				assert.Equal(t, 0, info.code, "qemu-img info: %s", info.stderr)
				assert.Equal(t, 0, list.code, "gonbd -L: %s", list.stderr)
				assert.Contains(t, list.stdout, "exports available: 1")
			} else {
				assert.Equal(t, 1, info.code, "qemu-img info exit code")
				assert.Contains(t, info.stderr, tc.qemuMessage)
				assert.Equal(t, 1, list.code, "gonbd -L exit code")
				oneLine(t, list.stderr)
				assert.Contains(t, list.stderr, tc.listMessage)
				assert.Empty(t, list.stdout)
			}
			assert.Contains(t, waitProcLog(gonbd.proc, logStart, tc.serverLog), tc.serverLog)

			// The control: qemu-nbd with the same credentials.
			controlInfo := qemuImgInfo(t, control, tc.object, tc.imageOpts...)
			assert.Equal(t, info.code, controlInfo.code, "qemu-img info exit code against qemu-nbd: %s", controlInfo.stderr)
			controlList := gonbdList(t, control, tc.object, tc.listArgs...)
			assert.Equal(t, list.code, controlList.code, "gonbd -L exit code against qemu-nbd: %s", controlList.stderr)
		})
	}
}

// TestTLSOptional checks that gonbd --tls=on serves plaintext and TLS
// clients on one port, as nbdkit --tls=on (the control) does.
func TestTLSOptional(t *testing.T) {
	keys := pskDir(t, "rich")
	object := pskObject(keys, "client", "rich")

	gonbd := startServer(t, "gonbd", "-f", "raw", "--tls=on", "--object", pskObject(keys, "server", ""),
		"--tls-creds", "tls0", sparseImage(t, 16<<20))
	port := freePort(t)
	nbdkit := start(t, requireTool(t, "nbdkit"), "-f", "--exit-with-parent", "-i", "127.0.0.1", "-p", strconv.Itoa(port),
		"--tls=on", "--tls-psk="+filepath.Join(keys, "keys.psk"), "memory", "16M")
	waitTCP(t, nbdkit, fmt.Sprintf("127.0.0.1:%d", port))
	control := nbdServer{proc: nbdkit, tool: "nbdkit", port: port}

	for _, tc := range []struct {
		name, object, log string
	}{
		{"Plaintext", "", "tls=no"},
		{"TLS", object, "tls=yes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range []nbdServer{gonbd, control} {
				logStart := len(s.stderr.String())
				info := qemuImgInfo(t, s, tc.object)
				assert.Equal(t, 0, info.code, "qemu-img info against %s: %s", s.tool, info.stderr)
				assert.Contains(t, info.stdout, "virtual size: 16 MiB")
				list := gonbdList(t, s, tc.object)
				assert.Equal(t, 0, list.code, "gonbd -L against %s: %s", s.tool, list.stderr)
				if s.tool == "gonbd" {
					assert.Contains(t, waitProcLog(s.proc, logStart, tc.log), tc.log)
				}
			}
		})
	}
}

func TestTLSPSKClients(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	qemuIo := requireTool(t, "qemu-io")
	dir := pskDir(t, "qemu")
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
	dir := pskDir(t, "qemu")
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

// TestTLSServerSigtermShutsDownOnce checks that SIGTERM stops a TLS server
// with exit code 0 and one shutdown, not a second one started when Serve
// returns.
func TestTLSServerSigtermShutsDownOnce(t *testing.T) {
	keys := pskDir(t, "rich")
	s := startServer(t, "gonbd", "-f", "raw", "--object", pskObject(keys, "server", ""), "--tls-creds", "tls0",
		sparseImage(t, 1<<20))
	list := gonbdList(t, s, pskObject(keys, "client", "rich"))
	require.Equal(t, 0, list.code, "gonbd -L: %s", list.stderr)

	stopServer(t, s.proc)
	log := s.stderr.String()
	assert.Equal(t, 1, strings.Count(log, "shutting down: connections="), "log:\n%s", log)
	assert.Equal(t, 1, strings.Count(log, "stopped"), "log:\n%s", log)
}
