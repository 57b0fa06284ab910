package tlscreds

import (
	"crypto/x509"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// run runs a shell command line in dir and fails the test on error.
func runShell(t *testing.T, dir, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s\n%s", script, out)
}

// opensslPublicKey returns the DER public key openssl reads from a key
// file, to compare with what ParsePrivateKeyPEM found.
func opensslPublicKey(t *testing.T, path, password string) []byte {
	t.Helper()
	args := []string{"pkey", "-in", path, "-pubout", "-outform", "DER", "-passin", "pass:" + password}
	out, err := exec.Command("openssl", args...).Output()
	require.NoError(t, err, "openssl %s", strings.Join(args, " "))
	return out
}

func TestParsePrivateKeyPEMForms(t *testing.T) {
	needTool(t, "openssl")
	needTool(t, "certtool")
	dir := t.TempDir()

	for _, tc := range []struct {
		name     string
		script   string
		password string
	}{
		{"OpenSSLPKCS1RSA", "openssl genrsa -traditional -out key.pem 2048", ""},
		{"OpenSSLPKCS8RSA", "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out key.pem", ""},
		{"OpenSSLSEC1WithParams", "openssl ecparam -name prime256v1 -genkey -out key.pem", ""},
		{"OpenSSLSEC1P384", "openssl ecparam -name secp384r1 -genkey -noout -out key.pem", ""},
		{"OpenSSLPKCS8EC", "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem", ""},
		{"OpenSSLEd25519", "openssl genpkey -algorithm ed25519 -out key.pem", ""},
		{"OpenSSLEncryptedPKCS8Default", "openssl genrsa -out plain.pem 2048 && openssl pkcs8 -topk8 -in plain.pem -passout pass:s3cret -out key.pem", "s3cret"},
		{"OpenSSLEncryptedPKCS8AES128SHA1", "openssl ecparam -name prime256v1 -genkey -noout -out plain.pem && openssl pkcs8 -topk8 -v2 aes-128-cbc -v2prf hmacWithSHA1 -in plain.pem -passout pass:pw -out key.pem", "pw"},
		{"OpenSSLEncryptedPKCS8AES192SHA512", "openssl genpkey -algorithm ed25519 -out plain.pem && openssl pkcs8 -topk8 -v2 aes-192-cbc -v2prf hmacWithSHA512 -in plain.pem -passout pass:pw -out key.pem", "pw"},
		{"OpenSSLEncryptedPKCS8DES3", "openssl ecparam -name prime256v1 -genkey -noout -out plain.pem && openssl pkcs8 -topk8 -v2 des3 -in plain.pem -passout pass:pw -out key.pem", "pw"},
		{"OpenSSLLegacyEncryptedRSA", "openssl genrsa -traditional -out plain.pem 2048 && openssl rsa -traditional -aes256 -in plain.pem -passout pass:pw -out key.pem", "pw"},
		{"CerttoolRSAWithText", "certtool --generate-privkey > key.pem", ""},
		{"CerttoolECDSA", "certtool --generate-privkey --key-type ecdsa --outfile key.pem", ""},
		{"CerttoolEd25519", "certtool --generate-privkey --key-type ed25519 --outfile key.pem", ""},
		{"CerttoolPKCS8", "certtool --generate-privkey --pkcs8 --outfile key.pem </dev/null", ""},
		{"CerttoolEmptyPassword", "certtool --generate-privkey --key-type ecdsa --pkcs8 --empty-password --outfile key.pem", ""},
		{"CerttoolNullPassword", "certtool --generate-privkey --key-type ecdsa --pkcs8 --null-password --outfile key.pem", ""},
		{"CerttoolEncryptedPKCS8", "certtool --generate-privkey --key-type ecdsa --outfile plain.pem && certtool --to-p8 --load-privkey plain.pem --password pw --outfile key.pem", "pw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := filepath.Join(dir, tc.name)
			runShell(t, "", "mkdir -p "+d)
			runShell(t, d, tc.script)
			path := filepath.Join(d, "key.pem")

			key, err := loadPrivateKey(path, []byte(tc.password))
			require.NoError(t, err)
			pub, err := x509.MarshalPKIXPublicKey(key.Public())
			require.NoError(t, err)
			assert.Equal(t, opensslPublicKey(t, path, tc.password), pub)

			if tc.password != "" {
				_, err := loadPrivateKey(path, nil)
				assert.ErrorIs(t, err, ErrKeyEncrypted)
				_, err = loadPrivateKey(path, []byte("wrong"))
				assert.Error(t, err)
			}
		})
	}
}

func TestParsePrivateKeyPEMUnsupported(t *testing.T) {
	needTool(t, "openssl")
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		script string
		want   string
	}{
		{"PKCS12PBE", "openssl ecparam -name prime256v1 -genkey -noout -out plain.pem && openssl pkcs8 -topk8 -v1 PBE-SHA1-3DES -in plain.pem -passout pass:pw -out key.pem",
			"only PBES2 (1.2.840.113549.1.5.13) is supported"},
		{"Scrypt", "openssl ecparam -name prime256v1 -genkey -noout -out plain.pem && openssl pkcs8 -topk8 -scrypt -in plain.pem -passout pass:pw -out key.pem",
			"uses scrypt, only PBKDF2 is supported"},
		{"DSA", "openssl dsaparam -out params.pem 1024 && openssl gendsa -out key.pem params.pem",
			"invalid PKCS#8 private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := filepath.Join(dir, tc.name)
			runShell(t, "", "mkdir -p "+d)
			runShell(t, d, tc.script)
			_, err := loadPrivateKey(filepath.Join(d, "key.pem"), []byte("pw"))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), filepath.Join(d, "key.pem"))
		})
	}
}

func TestParsePrivateKeyPEMErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want string
	}{
		{"Empty", "", "no private key PEM block found"},
		{"CertificateOnly", "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n", "no private key PEM block found"},
		{"BadPKCS1", "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n", "invalid PKCS#1 RSA private key"},
		{"BadSEC1", "-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n", "invalid SEC1 EC private key"},
		{"BadPKCS8", "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n", "invalid PKCS#8 private key"},
		{"BadEncryptedPKCS8", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n", "invalid encrypted PKCS#8 private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePrivateKeyPEM([]byte(tc.data), []byte("pw"))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func FuzzParsePrivateKeyPEM(f *testing.F) {
	f.Add([]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte(fuzzEncryptedKeySeed))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = ParsePrivateKeyPEM(data, []byte("pw"))
	})
}

// fuzzEncryptedKeySeed is an Ed25519 key encrypted by "openssl pkcs8
// -topk8 -v2 aes-128-cbc -iter 1" with password "pw", so that the fuzzer
// starts from a complete PBES2 structure that is cheap to derive.
const fuzzEncryptedKeySeed = `-----BEGIN ENCRYPTED PRIVATE KEY-----
MIGaMFYGCSqGSIb3DQEFDTBJMCgGCSqGSIb3DQEFDDAbBAjqeOFw0IML6AIBATAM
BggqhkiG9w0CCQUAMB0GCWCGSAFlAwQBAgQQNVLjtcWj81v5ShXjA7SuKQRA+2ly
zo50PR7tG/xMCGhFkXy+osnydsEDxrJXeISi/F5adlCW4dcjSADl0Pa0zC/WzYg5
fW/2oO4xMEsK83uU1Q==
-----END ENCRYPTED PRIVATE KEY-----
`
