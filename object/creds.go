package object

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"unicode/utf8"
)

// Credential file names inside a tls-creds object's dir, as QEMU names them.
const (
	fileCACert     = "ca-cert.pem"
	fileServerCert = "server-cert.pem"
	fileServerKey  = "server-key.pem"
	fileClientCert = "client-cert.pem"
	fileClientKey  = "client-key.pem"
	filePSK        = "keys.psk"
)

// defaultPSKUsername is the username a PSK client sends when username= is
// not set (QEMU's crypto/tlscredspsk.c).
const defaultPSKUsername = "qemu"

// TLSCredsX509 is a tls-creds-x509 object: certificates in PEM files under
// Dir.
type TLSCredsX509 struct {
	ID       string
	Dir      string
	Endpoint string // EndpointServer or EndpointClient
	// VerifyPeer requires the peer to present a certificate signed by the
	// CA. It is on unless verify-peer=off.
	VerifyPeer bool
	Priority   string // GnuTLS priority string, "" for the default
	// PasswordID is the id of the secret that decrypts the private key,
	// "" when the key is not encrypted.
	PasswordID string
	// SanityCheck checks the certificates' validity, usage and chain
	// when they are loaded. It is on unless sanity-check=off.
	SanityCheck bool
}

func (*TLSCredsX509) QOMType() string            { return TypeTLSCredsX509 }
func (c *TLSCredsX509) tlsCredsEndpoint() string { return c.Endpoint }

// TLSCredsPSK is a tls-creds-psk object: pre-shared keys in Dir/keys.psk,
// one "username:hexkey" line each, as psktool writes them.
type TLSCredsPSK struct {
	ID       string
	Dir      string
	Endpoint string // EndpointServer or EndpointClient
	// Username is the identity a client sends ("qemu" unless username= is
	// set). It is "" for a server, which accepts every user in keys.psk.
	Username   string
	Priority   string // GnuTLS priority string, "" for the default
	VerifyPeer bool
}

func (*TLSCredsPSK) QOMType() string            { return TypeTLSCredsPSK }
func (c *TLSCredsPSK) tlsCredsEndpoint() string { return c.Endpoint }

// TLSCredsAnon is a tls-creds-anon object. It is parsed so that QEMU
// command lines load, but TLSCreds rejects it: anonymous TLS encrypts
// without authenticating either side.
type TLSCredsAnon struct {
	ID         string
	Dir        string // optional, may hold dh-params.pem
	Endpoint   string
	Priority   string
	VerifyPeer bool
}

func (*TLSCredsAnon) QOMType() string { return TypeTLSCredsAnon }

var endpointValues = []string{EndpointServer, EndpointClient}

// tlsCommonProperties are the properties every tls-creds type has.
var tlsCommonProperties = []property{
	{name: "dir", qapiType: "string", kind: kindString, desc: "directory that holds the credential files"},
	{name: "endpoint", qapiType: "QCryptoTLSCredsEndpoint", kind: kindEnum, values: endpointValues, def: EndpointClient,
		desc: "server or client: the role the credentials are for"},
	{name: "priority", qapiType: "string", kind: kindString, desc: "GnuTLS priority string that selects versions and cipher suites"},
	{name: "verify-peer", qapiType: "bool", kind: kindBool, def: "true", desc: "whether the peer must authenticate"},
}

// tlsCommon holds the values of tlsCommonProperties.
type tlsCommon struct {
	dir, endpoint, priority string
	hasDir                  bool
	verifyPeer              bool
}

func (c *creation) tlsCommon() (tlsCommon, error) {
	var t tlsCommon
	var err error
	if t.dir, t.hasDir, err = c.str("dir"); err != nil {
		return t, err
	}
	if t.endpoint, err = c.enum("endpoint", EndpointClient, endpointValues); err != nil {
		return t, err
	}
	if t.priority, _, err = c.str("priority"); err != nil {
		return t, err
	}
	if t.verifyPeer, err = c.boolean("verify-peer", true); err != nil {
		return t, err
	}
	return t, nil
}

// requireDir rejects a tls-creds object without dir=, which x509 and PSK
// credentials need.
func (c *creation) requireDir(t tlsCommon, holds string) error {
	if t.hasDir && t.dir != "" {
		return nil
	}
	return c.errorf("", "missing property dir: add dir=/path/to/credentials, the directory that holds %s", holds)
}

// requireFile checks that dir/name is readable, as QEMU checks each
// required credential file when the object is created.
func (c *creation) requireFile(dir, name, fix string) error {
	path := filepath.Join(dir, name)
	f, err := os.Open(path)
	if err != nil {
		reason := err
		var pathErr *fs.PathError
		if errors.As(err, &pathErr) {
			reason = pathErr.Err
		}
		return &Error{ID: c.id, Type: c.typ, Property: "dir", Err: err,
			Msg: fmt.Sprintf("cannot read credential file %s: %v: %s", path, reason, fix)}
	}
	return f.Close()
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func createTLSCredsX509(c *creation) (Object, error) {
	t, err := c.tlsCommon()
	if err != nil {
		return nil, err
	}
	creds := &TLSCredsX509{ID: c.id, Dir: t.dir, Endpoint: t.endpoint, VerifyPeer: t.verifyPeer, Priority: t.priority}
	if creds.SanityCheck, err = c.boolean("sanity-check", true); err != nil {
		return nil, err
	}
	if creds.PasswordID, _, err = c.str("passwordid"); err != nil {
		return nil, err
	}
	if err := c.requireDir(t, "ca-cert.pem and the certificates"); err != nil {
		return nil, err
	}

	// A server needs its certificate and key. A client's are optional,
	// used only when both files exist (QEMU's crypto/tlscredsx509.c).
	required := []string{fileCACert}
	certFile, keyFile := fileClientCert, fileClientKey
	fix := "a client needs ca-cert.pem in dir"
	if t.endpoint == EndpointServer {
		required = append(required, fileServerCert, fileServerKey)
		certFile, keyFile = fileServerCert, fileServerKey
		fix = "a server needs ca-cert.pem, server-cert.pem and server-key.pem in dir"
	}
	for _, name := range required {
		if err := c.requireFile(t.dir, name, fix); err != nil {
			return nil, err
		}
	}

	// QEMU reads the key's password only when it loads a key, so a
	// passwordid on a client without a certificate is not checked.
	hasKey := fileExists(filepath.Join(t.dir, certFile)) && fileExists(filepath.Join(t.dir, keyFile))
	if creds.PasswordID != "" && hasKey {
		password, err := c.registry.secretFor(creds.PasswordID)
		if err != nil {
			return nil, &Error{ID: c.id, Type: c.typ, Property: "passwordid", Msg: err.Error()}
		}
		if !utf8.Valid(password) {
			return nil, c.errorf("passwordid", "secret %s is not valid UTF-8: a key password must be text", creds.PasswordID)
		}
	}
	return creds, nil
}

func createTLSCredsPSK(c *creation) (Object, error) {
	t, err := c.tlsCommon()
	if err != nil {
		return nil, err
	}
	creds := &TLSCredsPSK{ID: c.id, Dir: t.dir, Endpoint: t.endpoint, Priority: t.priority, VerifyPeer: t.verifyPeer}
	username, hasUsername, err := c.str("username")
	if err != nil {
		return nil, err
	}
	if err := c.requireDir(t, filePSK); err != nil {
		return nil, err
	}

	pskFile := filepath.Join(t.dir, filePSK)
	if t.endpoint == EndpointServer {
		if hasUsername {
			return nil, c.errorf("username", "%q is only for endpoint=client: remove it, a server accepts every username in %s", username, pskFile)
		}
		fix := fmt.Sprintf("create it with psktool -u USERNAME -p %s", pskFile)
		if err := c.requireFile(t.dir, filePSK, fix); err != nil {
			return nil, err
		}
		return creds, nil
	}

	creds.Username = defaultPSKUsername
	if hasUsername {
		creds.Username = username
	}
	fix := fmt.Sprintf("create it with psktool -u %s -p %s", creds.Username, pskFile)
	if err := c.requireFile(t.dir, filePSK, fix); err != nil {
		return nil, err
	}
	if err := checkPSKUsername(pskFile, creds.Username); err != nil {
		return nil, &Error{ID: c.id, Type: c.typ, Property: "username", Msg: err.Error()}
	}
	return creds, nil
}

// checkPSKUsername checks that the PSK file has a line for username, as
// QEMU's client does when it loads the key. It reads no key material.
func checkPSKUsername(path, username string) error {
	data, err := readFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	prefix := []byte(username + ":")
	scanner := bufio.NewScanner(bytes.NewReader(data))
	scanner.Buffer(make([]byte, 0, 4096), len(data)+1)
	for scanner.Scan() {
		if bytes.HasPrefix(scanner.Bytes(), prefix) {
			return nil
		}
	}
	return fmt.Errorf("username %q not found in %s: add it with psktool -u %s -p %s, or set username= to a user listed there",
		username, path, username, path)
}

func createTLSCredsAnon(c *creation) (Object, error) {
	t, err := c.tlsCommon()
	if err != nil {
		return nil, err
	}
	return &TLSCredsAnon{ID: c.id, Dir: t.dir, Endpoint: t.endpoint, Priority: t.priority, VerifyPeer: t.verifyPeer}, nil
}
