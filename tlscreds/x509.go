package tlscreds

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// File names inside a tls-creds-x509 directory, as QEMU names them.
const (
	FileCACert     = "ca-cert.pem"
	FileCACRL      = "ca-crl.pem"
	FileServerCert = "server-cert.pem"
	FileServerKey  = "server-key.pem"
	FileClientCert = "client-cert.pem"
	FileClientKey  = "client-key.pem"
	FileDHParams   = "dh-params.pem"
)

// X509Config selects and configures tls-creds-x509 credentials.
type X509Config struct {
	// Dir is the credentials directory (QEMU's dir=).
	Dir      string
	Endpoint Endpoint
	// VerifyPeer makes a server require a client certificate issued by
	// the CA, and a client check the server certificate and host name
	// (QEMU's verify-peer=, which defaults to on).
	VerifyPeer bool
	// SanityCheck checks the CA and the endpoint's certificate at load
	// time as QEMU's sanity-check= does (default on in QEMU).
	SanityCheck bool
	// KeyPassword decrypts an encrypted private key (the secret that
	// QEMU's passwordid= names).
	KeyPassword []byte
	Priority    Priority
	Logger      hclog.Logger // nil: hclog.NewNullLogger()
}

// X509 is loaded tls-creds-x509 credentials. It implements Server and
// Client and is safe for concurrent handshakes.
type X509 struct {
	endpoint   Endpoint
	verifyPeer bool
	log        hclog.Logger

	roots   *x509.CertPool
	caCerts []*x509.Certificate // the certificates in roots
	crls    []*x509.RevocationList
	crlPath string
	// cert is the endpoint's own certificate; nil for a client directory
	// without client-cert.pem.
	cert *tls.Certificate
	// base is the configuration each handshake clones.
	base *tls.Config
}

var (
	_ Server = (*X509)(nil)
	_ Client = (*X509)(nil)
)

// LoadX509 loads the credentials in cfg.Dir for cfg.Endpoint. A server
// needs ca-cert.pem, server-cert.pem and server-key.pem; a client needs
// ca-cert.pem, and client-cert.pem with client-key.pem if the server
// requests a certificate. ca-crl.pem is optional for both. Every error names
// the file it is about.
func LoadX509(cfg X509Config) (*X509, error) {
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	x := &X509{
		endpoint:   cfg.Endpoint,
		verifyPeer: cfg.VerifyPeer,
		log:        log,
	}

	caPath := filepath.Join(cfg.Dir, FileCACert)
	caCerts, err := loadCertificates(caPath)
	if err != nil {
		return nil, fmt.Errorf("tls-creds-x509: CA certificate: %w", err)
	}
	x.roots, x.caCerts = x509.NewCertPool(), caCerts
	for _, c := range caCerts {
		x.roots.AddCert(c)
	}

	if err := x.loadCRL(cfg.Dir, caCerts); err != nil {
		return nil, err
	}
	certPath, keyPath, err := x.loadOwnCertificate(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Endpoint == EndpointServer {
		x.noteDHParams(cfg.Dir)
	}

	if cfg.SanityCheck {
		if err := sanityCheck(cfg.Endpoint, caPath, caCerts, certPath, x.cert); err != nil {
			return nil, fmt.Errorf("tls-creds-x509: %w", err)
		}
	}

	x.base, err = x.baseConfig(cfg.Priority)
	if err != nil {
		return nil, fmt.Errorf("tls-creds-x509: %w", err)
	}
	log.Debug("loaded x509 credentials", "dir", cfg.Dir, "endpoint", cfg.Endpoint.String(),
		"verify-peer", cfg.VerifyPeer, "cert", certPath, "key", keyPath, "crl", x.crlPath)
	return x, nil
}

// loadCRL reads ca-crl.pem if it exists and checks that the CA signed it.
func (x *X509) loadCRL(dir string, caCerts []*x509.Certificate) error {
	path := filepath.Join(dir, FileCACRL)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	crls, err := loadCRLs(path)
	if err != nil {
		return fmt.Errorf("tls-creds-x509: %w", err)
	}
	for i, crl := range crls {
		if crlIssuer(crl, caCerts) == nil {
			return fmt.Errorf("tls-creds-x509: %s: CRL %d (issuer %s) is not signed by a CA in %s",
				path, i+1, crl.Issuer, FileCACert)
		}
	}
	x.crls, x.crlPath = crls, path
	return nil
}

// crlIssuer returns the CA certificate that signed crl, or nil. It does
// not require the cRLSign key usage that RevocationList.CheckSignatureFrom
// demands: QEMU's TLS guide issues CAs with keyCertSign only, and GnuTLS
// 3.7 applies CRLs that such a CA signed.
func crlIssuer(crl *x509.RevocationList, caCerts []*x509.Certificate) *x509.Certificate {
	for _, ca := range caCerts {
		if !bytes.Equal(crl.RawIssuer, ca.RawSubject) {
			continue
		}
		if ca.CheckSignature(crl.SignatureAlgorithm, crl.RawTBSRevocationList, crl.Signature) == nil {
			return ca
		}
	}
	return nil
}

// loadOwnCertificate loads the endpoint's certificate chain and key.
// QEMU requires them for a server and loads them for a client only when
// both files exist.
func (x *X509) loadOwnCertificate(cfg X509Config) (certPath, keyPath string, err error) {
	certPath = filepath.Join(cfg.Dir, FileServerCert)
	keyPath = filepath.Join(cfg.Dir, FileServerKey)
	if cfg.Endpoint == EndpointClient {
		certPath = filepath.Join(cfg.Dir, FileClientCert)
		keyPath = filepath.Join(cfg.Dir, FileClientKey)
		certErr := fileExists(certPath)
		keyErr := fileExists(keyPath)
		switch {
		case certErr != nil && keyErr != nil:
			x.log.Debug("no client certificate: the client can only reach servers with verify-peer=off",
				"cert", certPath)
			return "", "", nil
		case certErr != nil:
			x.log.Warn("client key without certificate: sending no client certificate", "key", keyPath, "error", certErr)
			return "", "", nil
		case keyErr != nil:
			x.log.Warn("client certificate without key: sending no client certificate", "cert", certPath, "error", keyErr)
			return "", "", nil
		}
	}

	chain, err := loadCertificates(certPath)
	if err != nil {
		return "", "", fmt.Errorf("tls-creds-x509: %s certificate: %w", cfg.Endpoint, err)
	}
	key, err := loadPrivateKey(keyPath, cfg.KeyPassword)
	if err != nil {
		return "", "", fmt.Errorf("tls-creds-x509: %s key: %w", cfg.Endpoint, err)
	}
	if !publicKeysEqual(chain[0].PublicKey, key.Public()) {
		return "", "", fmt.Errorf("tls-creds-x509: %s does not belong to the certificate in %s: use the key the certificate was issued for",
			keyPath, certPath)
	}

	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	x.cert = cert
	return certPath, keyPath, nil
}

func fileExists(path string) error {
	_, err := os.Stat(path)
	return err
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// noteDHParams logs that dh-params.pem is not used: crypto/tls offers no
// finite-field Diffie-Hellman, only ECDHE.
func (x *X509) noteDHParams(dir string) {
	path := filepath.Join(dir, FileDHParams)
	if fileExists(path) == nil {
		x.log.Debug("ignoring DH parameters: Go's TLS uses ECDHE key exchange only", "file", path)
	}
}

// baseConfig builds the crypto/tls configuration shared by all
// handshakes. Peer verification runs in VerifyConnection (see
// x509verify.go) rather than in crypto/tls, because QEMU's rules differ:
// CRLs, the CN fallback for host names, and no key purpose check on the
// peer.
func (x *X509) baseConfig(p Priority) (*tls.Config, error) {
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// crypto/tls's own verification is replaced by verifyPeer.
		InsecureSkipVerify: true,
		// NBD moves bulk data, so full 16 KiB records from the start
		// beat crypto/tls's small first records, which only help the
		// latency of interactive protocols.
		DynamicRecordSizingDisabled: true,
	}
	if err := applyPriority(conf, p); err != nil {
		return nil, err
	}

	if x.endpoint == EndpointServer {
		conf.Certificates = []tls.Certificate{*x.cert}
		// qemu-nbd and nbdkit issue no session tickets, and NBD
		// clients do not resume sessions, so a ticket would be an
		// unused message in every handshake.
		conf.SessionTicketsDisabled = true
		if x.verifyPeer {
			// RequireAnyClientCert requests a certificate and fails
			// the handshake without one; verifyConnection checks it.
			//
			// ClientCAs stays nil, so the CertificateRequest lists no
			// CA names. A GnuTLS 3.7 client (qemu-img, nbdinfo) that
			// gets a CA list sends its certificate only if its public
			// key algorithm appears among the request's signature
			// algorithms, and it maps rsa_pss_rsae_* to RSA-PSS, not
			// RSA. crypto/tls offers no rsa_pkcs1_* in TLS 1.3, so an
			// RSA client certificate, as certtool makes by default,
			// would never be sent. Without a CA list, a GnuTLS client
			// with one certificate sends it.
			conf.ClientAuth = tls.RequireAnyClientCert
		}
	} else if x.cert != nil {
		cert := x.cert
		// Send the certificate whatever CA names the server lists, as
		// GnuTLS clients do with a single certificate.
		conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert, nil
		}
	}
	return conf, nil
}

// ServerHandshake runs the server side of a TLS handshake on raw. The
// handshake ends when ctx does.
func (x *X509) ServerHandshake(ctx context.Context, raw net.Conn) (Conn, error) {
	if x.endpoint != EndpointServer {
		return nil, errors.New("tls-creds-x509: credentials loaded with endpoint=client cannot serve: use endpoint=server")
	}
	conf := x.base.Clone()
	if x.verifyPeer {
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			return x.verifyPeerChain(cs.PeerCertificates, "client", "")
		}
	}
	batch := &batchConn{Conn: raw}
	return x.handshake(ctx, tls.Server(batch, conf), batch)
}

// ClientHandshake runs the client side of a TLS handshake on raw and,
// with VerifyPeer, checks that the server certificate matches hostname.
// As in QEMU, verification fails without a host name.
func (x *X509) ClientHandshake(ctx context.Context, raw net.Conn, hostname string) (Conn, error) {
	if x.endpoint != EndpointClient {
		return nil, errors.New("tls-creds-x509: credentials loaded with endpoint=server cannot connect: use endpoint=client")
	}
	conf := x.base.Clone()
	if net.ParseIP(hostname) == nil {
		conf.ServerName = hostname
	}
	if x.verifyPeer {
		if hostname == "" {
			return nil, errors.New("tls-creds-x509: no host name to verify the server certificate against: set the TLS host name")
		}
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			return x.verifyPeerChain(cs.PeerCertificates, "server", hostname)
		}
	}
	batch := &batchConn{Conn: raw}
	return x.handshake(ctx, tls.Client(batch, conf), batch)
}

func (x *X509) handshake(ctx context.Context, c *tls.Conn, raw *batchConn) (Conn, error) {
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake with %s: %w", raw.RemoteAddr(), err)
	}

	cs := c.ConnectionState()
	info := Info{
		Version:     tls.VersionName(cs.Version),
		CipherSuite: tls.CipherSuiteName(cs.CipherSuite),
	}
	if len(cs.PeerCertificates) > 0 {
		dn, err := FormatDN(cs.PeerCertificates[0].RawSubject)
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("TLS handshake with %s: peer certificate subject: %w", raw.RemoteAddr(), err)
		}
		info.Identity = dn
	}
	x.log.Debug("TLS session established", "peer", raw.RemoteAddr().String(), "tls", info.Version,
		"cipher", info.CipherSuite, "identity", info.Identity)
	return &x509Conn{Conn: c, raw: raw, info: info}, nil
}

// x509Conn is an established crypto/tls session. Reads go straight to
// *tls.Conn; the records of one Write go to the socket in batches (see
// batchConn).
type x509Conn struct {
	*tls.Conn
	raw  *batchConn
	info Info

	writeMu sync.Mutex
}

func (c *x509Conn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.raw.startBatch()
	n, err := c.Conn.Write(p)
	if ferr := c.raw.endBatch(); err == nil && ferr != nil {
		return 0, ferr
	}
	return n, err
}

func (c *x509Conn) TLSInfo() Info { return c.info }
