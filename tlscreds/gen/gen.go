// Package gen creates TLS credentials for gonbd and QEMU: a CA with
// server and client certificates laid out as a tls-creds-x509 directory,
// and psktool-format keys for tls-creds-psk. cmd/gonbd-creds and test
// fixtures use it.
package gen

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Validity is a certificate's validity period.
type Validity struct {
	NotBefore, NotAfter time.Time
}

// ValidFor returns a period from an hour ago (to allow for clock skew
// between hosts) to days from now.
func ValidFor(days int) Validity {
	now := time.Now()
	return Validity{NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(0, 0, days)}
}

// CA is a certificate authority that issues certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA creates a self-signed CA with an ECDSA P-256 key. Its certificate
// has the extensions QEMU's TLS guide recommends: basic constraints CA and
// key usage keyCertSign (and cRLSign, so it can sign a CRL).
func NewCA(commonName string, v Validity) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"gonbd"}, CommonName: commonName},
		NotBefore:             v.NotBefore,
		NotAfter:              v.NotAfter,
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Leaf describes a server or client certificate to issue.
type Leaf struct {
	// CommonName is the subject CN. The subject is "O=gonbd,CN=<name>",
	// which is also the identity QEMU's authz objects see.
	CommonName string
	// DNSNames and IPs become subjectAltName entries (server only).
	DNSNames []string
	IPs      []net.IP
	Server   bool // key purpose serverAuth
	Client   bool // key purpose clientAuth
	Validity Validity
}

// Issue creates an ECDSA P-256 key and a certificate for it signed by
// ca, with key usage digitalSignature and keyEncipherment as QEMU's TLS
// guide recommends (certtool's signing_key and encryption_key).
func (ca *CA) Issue(l Leaf) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"gonbd"}, CommonName: l.CommonName},
		NotBefore:             l.Validity.NotBefore,
		NotAfter:              l.Validity.NotAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:              l.DNSNames,
		IPAddresses:           l.IPs,
	}
	if l.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if l.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate for %q: %w", l.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// CRL returns a PEM certificate revocation list signed by ca that revokes
// the given certificates.
func (ca *CA) CRL(revoked ...*x509.Certificate) ([]byte, error) {
	now := time.Now()
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(now.Unix()),
		ThisUpdate: now.Add(-time.Hour),
		NextUpdate: now.AddDate(0, 0, 30),
	}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: now.Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("create CRL: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

// CertPEM encodes a certificate as PEM.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// KeyPEM encodes a private key as unencrypted PKCS#8 PEM.
func KeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}

// X509Options configures X509.
type X509Options struct {
	Dir string
	// Hostnames and IPs are the server certificate's subjectAltName
	// entries; the first host name is also its CN. At least one of them
	// is required.
	Hostnames []string
	IPs       []net.IP
	// ClientName is the client certificate's CN (default "gonbd-client").
	ClientName string
	// Days is the validity of all certificates (default 365).
	Days int
	// Force replaces existing files.
	Force bool
}

// X509 writes a CA, a server and a client certificate with their keys to
// opts.Dir as ca-cert.pem, ca-key.pem, server-cert.pem, server-key.pem,
// client-cert.pem and client-key.pem, so that the directory serves as both
// an endpoint=server and an endpoint=client tls-creds-x509 directory.
// Keys are written with mode 0600. Without Force it fails, before writing
// anything, if one of the files exists.
func X509(opts X509Options) error {
	if len(opts.Hostnames) == 0 && len(opts.IPs) == 0 {
		return errors.New("no server host name or IP address: give at least one")
	}
	if opts.ClientName == "" {
		opts.ClientName = "gonbd-client"
	}
	if opts.Days == 0 {
		opts.Days = 365
	}
	if opts.Days < 0 {
		return fmt.Errorf("invalid validity of %d days: give a positive number", opts.Days)
	}
	serverCN := opts.Hostnames
	if len(serverCN) == 0 {
		serverCN = []string{opts.IPs[0].String()}
	}

	files, err := x509Files(opts, serverCN[0])
	if err != nil {
		return err
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", opts.Dir, err)
	}
	if !opts.Force {
		for _, f := range files {
			path := filepath.Join(opts.Dir, f.name)
			if _, err := os.Lstat(path); err == nil {
				return fmt.Errorf("%s already exists: use --force to replace it", path)
			}
		}
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(opts.Dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

type namedFile struct {
	name string
	data []byte
	mode os.FileMode
}

// x509Files creates the CA and the two certificates in memory.
func x509Files(opts X509Options, serverCN string) ([]namedFile, error) {
	v := ValidFor(opts.Days)
	ca, err := NewCA("gonbd CA", v)
	if err != nil {
		return nil, err
	}
	server, serverKey, err := ca.Issue(Leaf{CommonName: serverCN, DNSNames: opts.Hostnames, IPs: opts.IPs,
		Server: true, Validity: v})
	if err != nil {
		return nil, err
	}
	client, clientKey, err := ca.Issue(Leaf{CommonName: opts.ClientName, Client: true, Validity: v})
	if err != nil {
		return nil, err
	}

	files := []namedFile{{name: "ca-cert.pem", data: CertPEM(ca.Cert), mode: 0o644}}
	for _, k := range []struct {
		name string
		key  crypto.Signer
	}{{"ca-key.pem", ca.Key}, {"server-key.pem", serverKey}, {"client-key.pem", clientKey}} {
		data, err := KeyPEM(k.key)
		if err != nil {
			return nil, err
		}
		files = append(files, namedFile{name: k.name, data: data, mode: 0o600})
	}
	files = append(files,
		namedFile{name: "server-cert.pem", data: CertPEM(server), mode: 0o644},
		namedFile{name: "client-cert.pem", data: CertPEM(client), mode: 0o644})
	return files, nil
}

// writeFileAtomic writes data to a temporary file beside path and renames
// it into place, so that a reader never sees a partial key.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
