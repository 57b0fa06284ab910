package tlscreds

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash"
)

// Object identifiers of PKCS#5 v2.1 (RFC 8018) and the ciphers it uses.
var (
	oidPBES2  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidScrypt = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}

	oidHMACWithSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACWithSHA224 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 8}
	oidHMACWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}

	oidAES128CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidDESEDE3CBC = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
)

// maxPBKDF2Iterations bounds the work a key file can ask for. certtool
// 3.7 writes 600000 iterations and openssl 3.0 writes 2048, so a limit 30
// times higher than certtool's leaves room for stronger settings while a
// corrupt count cannot stall loading for hours.
const maxPBKDF2Iterations = 20_000_000

type encryptedPrivateKeyInfo struct {
	Algorithm     algorithmIdentifier
	EncryptedData []byte
}

type algorithmIdentifier struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

type pbes2Params struct {
	KeyDerivationFunc algorithmIdentifier
	EncryptionScheme  algorithmIdentifier
}

type pbkdf2Params struct {
	Salt           []byte
	IterationCount int
	KeyLength      int                 `asn1:"optional"`
	PRF            algorithmIdentifier `asn1:"optional"`
}

// decryptPKCS8 decrypts a PKCS#8 EncryptedPrivateKeyInfo protected with
// PBES2: PBKDF2 with an HMAC-SHA-1/SHA-2 PRF, then AES-CBC or 3DES-CBC.
// This covers "certtool --to-p8 --password" (PBKDF2-HMAC-SHA256 with
// AES-128-CBC in GnuTLS 3.7) and "openssl pkcs8 -topk8" (PBKDF2-HMAC-
// SHA256 with AES-256-CBC in OpenSSL 3.0).
func decryptPKCS8(der, password []byte) ([]byte, error) {
	var info encryptedPrivateKeyInfo
	if rest, err := asn1.Unmarshal(der, &info); err != nil || len(rest) != 0 {
		return nil, errors.New("invalid encrypted PKCS#8 private key")
	}
	if !info.Algorithm.Algorithm.Equal(oidPBES2) {
		return nil, fmt.Errorf("encrypted PKCS#8 private key uses algorithm %s, only PBES2 (%s) is supported: re-encrypt it with certtool --to-p8 or openssl pkcs8 -topk8 -v2 aes-256-cbc",
			info.Algorithm.Algorithm, oidPBES2)
	}
	var params pbes2Params
	if rest, err := asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &params); err != nil || len(rest) != 0 {
		return nil, errors.New("invalid PBES2 parameters in encrypted PKCS#8 private key")
	}

	block, iv, err := pbes2Cipher(params, password)
	if err != nil {
		return nil, err
	}
	return decryptCBC(block, iv, info.EncryptedData)
}

// pbes2Cipher derives the key and returns the block cipher and IV that
// params name.
func pbes2Cipher(params pbes2Params, password []byte) (cipher.Block, []byte, error) {
	kdf := params.KeyDerivationFunc
	if kdf.Algorithm.Equal(oidScrypt) {
		return nil, nil, errors.New("encrypted PKCS#8 private key uses scrypt, only PBKDF2 is supported: re-encrypt it with openssl pkcs8 -topk8 -v2 aes-256-cbc")
	}
	if !kdf.Algorithm.Equal(oidPBKDF2) {
		return nil, nil, fmt.Errorf("encrypted PKCS#8 private key uses key derivation %s, only PBKDF2 is supported", kdf.Algorithm)
	}
	var kdfParams pbkdf2Params
	if rest, err := asn1.Unmarshal(kdf.Parameters.FullBytes, &kdfParams); err != nil || len(rest) != 0 {
		return nil, nil, errors.New("invalid PBKDF2 parameters in encrypted PKCS#8 private key")
	}
	if kdfParams.IterationCount < 1 || kdfParams.IterationCount > maxPBKDF2Iterations {
		return nil, nil, fmt.Errorf("encrypted PKCS#8 private key asks for %d PBKDF2 iterations, expected 1 to %d", kdfParams.IterationCount, maxPBKDF2Iterations)
	}
	prf, err := pbkdf2PRF(kdfParams.PRF.Algorithm)
	if err != nil {
		return nil, nil, err
	}

	scheme := params.EncryptionScheme
	var iv []byte
	if rest, err := asn1.Unmarshal(scheme.Parameters.FullBytes, &iv); err != nil || len(rest) != 0 {
		return nil, nil, errors.New("invalid cipher IV in encrypted PKCS#8 private key")
	}
	var keyLen int
	var newCipher func([]byte) (cipher.Block, error)
	switch {
	case scheme.Algorithm.Equal(oidAES128CBC):
		keyLen, newCipher = 16, aes.NewCipher
	case scheme.Algorithm.Equal(oidAES192CBC):
		keyLen, newCipher = 24, aes.NewCipher
	case scheme.Algorithm.Equal(oidAES256CBC):
		keyLen, newCipher = 32, aes.NewCipher
	case scheme.Algorithm.Equal(oidDESEDE3CBC):
		keyLen, newCipher = 24, des.NewTripleDESCipher
	default:
		return nil, nil, fmt.Errorf("encrypted PKCS#8 private key uses cipher %s, supported are AES-128/192/256-CBC and DES-EDE3-CBC", scheme.Algorithm)
	}
	if kdfParams.KeyLength != 0 && kdfParams.KeyLength != keyLen {
		return nil, nil, fmt.Errorf("encrypted PKCS#8 private key: PBKDF2 key length %d does not match the cipher's %d", kdfParams.KeyLength, keyLen)
	}

	key, err := pbkdf2.Key(prf, string(password), kdfParams.Salt, kdfParams.IterationCount, keyLen)
	if err != nil {
		return nil, nil, fmt.Errorf("derive key for encrypted PKCS#8 private key: %w", err)
	}
	block, err := newCipher(key)
	if err != nil {
		return nil, nil, err
	}
	if len(iv) != block.BlockSize() {
		return nil, nil, fmt.Errorf("encrypted PKCS#8 private key: IV is %d bytes, expected %d", len(iv), block.BlockSize())
	}
	return block, iv, nil
}

// pbkdf2PRF maps a PBKDF2 PRF identifier to its hash. An absent PRF means
// HMAC-SHA-1 (RFC 8018 appendix A.2).
func pbkdf2PRF(oid asn1.ObjectIdentifier) (func() hash.Hash, error) {
	switch {
	case len(oid) == 0, oid.Equal(oidHMACWithSHA1):
		return sha1.New, nil
	case oid.Equal(oidHMACWithSHA224):
		return sha256.New224, nil
	case oid.Equal(oidHMACWithSHA256):
		return sha256.New, nil
	case oid.Equal(oidHMACWithSHA384):
		return sha512.New384, nil
	case oid.Equal(oidHMACWithSHA512):
		return sha512.New, nil
	}
	return nil, fmt.Errorf("encrypted PKCS#8 private key uses PBKDF2 PRF %s, supported are HMAC with SHA-1, SHA-224, SHA-256, SHA-384 and SHA-512", oid)
}

var errWrongPassword = errors.New("decrypt encrypted PKCS#8 private key: wrong password or corrupt key")

// decryptCBC decrypts and removes the PKCS#7 padding. A wrong password
// shows up as bad padding (or, rarely, as a key that does not parse).
func decryptCBC(block cipher.Block, iv, data []byte) ([]byte, error) {
	size := block.BlockSize()
	if len(data) == 0 || len(data)%size != 0 {
		return nil, fmt.Errorf("encrypted PKCS#8 private key: data length %d is not a multiple of the cipher block size %d", len(data), size)
	}
	plain := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, data)

	pad := int(plain[len(plain)-1])
	if pad == 0 || pad > size {
		return nil, errWrongPassword
	}
	for _, b := range plain[len(plain)-pad:] {
		if int(b) != pad {
			return nil, errWrongPassword
		}
	}
	return plain[:len(plain)-pad], nil
}
