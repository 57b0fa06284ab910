package tlscreds

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrKeyEncrypted is returned for an encrypted private key when no
// password was given (QEMU's passwordid= property).
var ErrKeyEncrypted = errors.New("private key is encrypted: give its password with passwordid=")

// readPEMFile reads a PEM file and returns its blocks. Text around the
// blocks is ignored, since certtool writes a description of the key or
// certificate before the PEM block.
func readPEMFile(path string) ([]*pem.Block, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blocks := decodePEMBlocks(data)
	if len(blocks) == 0 {
		return nil, fmt.Errorf("%s: no PEM block found: the file must be PEM text starting with \"-----BEGIN\", not empty or DER", path)
	}
	return blocks, nil
}

func decodePEMBlocks(data []byte) []*pem.Block {
	var blocks []*pem.Block
	for {
		block, rest := pem.Decode(data)
		if block == nil {
			return blocks
		}
		blocks = append(blocks, block)
		data = rest
	}
}

// loadCertificates parses every certificate in a PEM file, in file order.
func loadCertificates(path string) ([]*x509.Certificate, error) {
	blocks, err := readPEMFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificates: %w", err)
	}
	var certs []*x509.Certificate
	for i, block := range blocks {
		if block.Type != "CERTIFICATE" && block.Type != "X509 CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: PEM block %d: invalid certificate: %w", path, i+1, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no CERTIFICATE PEM block found, only %s: put the certificate in this file",
			path, pemBlockTypes(blocks))
	}
	return certs, nil
}

// pemBlockTypes lists the types of blocks, such as "RSA PRIVATE KEY".
func pemBlockTypes(blocks []*pem.Block) string {
	types := make([]string, len(blocks))
	for i, b := range blocks {
		types[i] = b.Type
	}
	return strings.Join(types, ", ")
}

// loadCRLs parses every certificate revocation list in a PEM file.
func loadCRLs(path string) ([]*x509.RevocationList, error) {
	blocks, err := readPEMFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CRL: %w", err)
	}
	var crls []*x509.RevocationList
	for i, block := range blocks {
		if block.Type != "X509 CRL" {
			continue
		}
		crl, err := x509.ParseRevocationList(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: PEM block %d: invalid CRL: %w", path, i+1, err)
		}
		crls = append(crls, crl)
	}
	if len(crls) == 0 {
		return nil, fmt.Errorf("%s: no X509 CRL PEM block found", path)
	}
	return crls, nil
}

// loadPrivateKey reads the first private key in a PEM file, decrypting it
// with password if it is encrypted.
func loadPrivateKey(path string, password []byte) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	key, err := ParsePrivateKeyPEM(data, password)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// ParsePrivateKeyPEM parses the first private key in PEM data in any form
// certtool and openssl write: PKCS#1 RSA, SEC1 EC, PKCS#8 (RSA, ECDSA,
// Ed25519), PKCS#8 encrypted with PBES2, and OpenSSL's legacy encrypted
// PEM ("Proc-Type: 4,ENCRYPTED"). password decrypts encrypted keys.
func ParsePrivateKeyPEM(data, password []byte) (crypto.Signer, error) {
	for _, block := range decodePEMBlocks(data) {
		switch block.Type {
		case "EC PARAMETERS":
			// openssl ecparam -genkey writes the curve before the key.
			continue
		case "RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
			return parsePrivateKeyBlock(block, password)
		case "DSA PRIVATE KEY":
			return nil, errors.New("DSA private keys are not supported by TLS 1.2 and 1.3 in Go: use an RSA, ECDSA or Ed25519 key")
		}
	}
	return nil, errors.New("no private key PEM block found (expected RSA PRIVATE KEY, EC PRIVATE KEY, PRIVATE KEY or ENCRYPTED PRIVATE KEY)")
}

func parsePrivateKeyBlock(block *pem.Block, password []byte) (crypto.Signer, error) {
	der := block.Bytes
	if block.Headers["Proc-Type"] == "4,ENCRYPTED" {
		if len(password) == 0 {
			return nil, ErrKeyEncrypted
		}
		// DecryptPEMBlock is deprecated because this legacy format is
		// weak, but "openssl rsa -aes256" and "openssl ec -aes256" still
		// write it and GnuTLS reads it.
		plain, err := x509.DecryptPEMBlock(block, password)
		if err != nil {
			return nil, fmt.Errorf("decrypt private key: %w (wrong password?)", err)
		}
		der = plain
	}

	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err := x509.ParsePKCS1PrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("invalid PKCS#1 RSA private key: %w", err)
		}
		return key, nil
	case "EC PRIVATE KEY":
		key, err := x509.ParseECPrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("invalid SEC1 EC private key: %w", err)
		}
		return key, nil
	case "ENCRYPTED PRIVATE KEY":
		return parseEncryptedPKCS8(der, password)
	}
	return parsePKCS8(der)
}

// parseEncryptedPKCS8 decrypts and parses an encrypted PKCS#8 key.
// Without a password it tries the empty password, because GnuTLS (and so
// QEMU without passwordid=) loads keys that "certtool --empty-password"
// or "--null-password" wrote.
func parseEncryptedPKCS8(der, password []byte) (crypto.Signer, error) {
	plain, err := decryptPKCS8(der, password)
	if len(password) == 0 && errors.Is(err, errWrongPassword) {
		return nil, ErrKeyEncrypted
	}
	if err != nil {
		return nil, err
	}
	key, err := parsePKCS8(plain)
	if err != nil {
		if len(password) == 0 {
			return nil, ErrKeyEncrypted
		}
		return nil, errWrongPassword
	}
	return key, nil
}

func parsePKCS8(der []byte) (crypto.Signer, error) {
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("invalid PKCS#8 private key: %w", err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("unsupported PKCS#8 private key type %T: use an RSA, ECDSA or Ed25519 key", key)
}
