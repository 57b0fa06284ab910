package object

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
)

// Values of a secret's format property.
const (
	SecretFormatRaw    = "raw"
	SecretFormatBase64 = "base64"
)

// Secret is a secret object: a password or key given inline (data=), in a
// file (file=), and optionally encrypted with AES-256-CBC under another
// secret (keyid= and iv=). Printing a Secret with fmt shows only its id.
type Secret struct {
	ID   string
	data []byte
}

func (*Secret) QOMType() string { return TypeSecret }

// Bytes returns a copy of the decoded and decrypted secret.
func (s *Secret) Bytes() []byte { return bytes.Clone(s.data) }

// Format prints the secret's id in place of its value, for every verb.
func (s *Secret) Format(f fmt.State, verb rune) { fmt.Fprintf(f, "secret(%s)", s.ID) }

var secretFormatValues = []string{SecretFormatRaw, SecretFormatBase64}

var secretProperties = []property{
	{name: "data", qapiType: "string", kind: kindString, desc: "the secret inline (visible in the process list; prefer file)"},
	{name: "file", qapiType: "string", kind: kindString, desc: "file that holds the secret"},
	{name: "format", qapiType: "QCryptoSecretFormat", kind: kindEnum, values: secretFormatValues, def: SecretFormatRaw,
		desc: "raw or base64: the encoding of data or of the file"},
	{name: "iv", qapiType: "string", kind: kindString, desc: "base64 of the 16-byte AES-CBC initialization vector, with keyid"},
	{name: "keyid", qapiType: "string", kind: kindString, desc: "id of a 32-byte secret that decrypts this one with AES-256-CBC"},
}

func createSecret(c *creation) (Object, error) {
	data, hasData, err := c.str("data")
	if err != nil {
		return nil, err
	}
	file, hasFile, err := c.str("file")
	if err != nil {
		return nil, err
	}
	format, err := c.enum("format", SecretFormatRaw, secretFormatValues)
	if err != nil {
		return nil, err
	}
	keyID, hasKeyID, err := c.str("keyid")
	if err != nil {
		return nil, err
	}

	var input []byte
	source := "data"
	switch {
	case hasData && hasFile:
		return nil, c.errorf("", "data and file are mutually exclusive: keep one of them")
	case hasFile:
		source = "file"
		if input, err = readFile(file); err != nil {
			reason := err
			var pathErr *fs.PathError
			if errors.As(err, &pathErr) {
				reason = pathErr.Err
			}
			return nil, &Error{ID: c.id, Type: c.typ, Property: "file", Err: err,
				Msg: fmt.Sprintf("cannot read %s: %v", file, reason)}
		}
	case hasData:
		input = []byte(data)
	default:
		return nil, c.errorf("", "missing property data or file: add file=/path/to/secret (or data=VALUE, which the process list shows)")
	}

	var plain []byte
	switch {
	case hasKeyID:
		plain, err = c.decryptSecret(input, source, format, keyID)
	case format == SecretFormatBase64:
		plain, err = decodeBase64(input)
		if err != nil {
			err = c.errorf(source, "%v: check format=base64, or use format=raw", err)
		}
	default:
		plain = input
	}
	if err != nil {
		return nil, err
	}
	return &Secret{ID: c.id, data: plain}, nil
}

// decryptSecret decrypts input with AES-256-CBC, as QEMU's
// crypto/secret_common.c does: the key is the secret keyID (32 bytes), the
// IV is the base64 iv property (16 bytes), the ciphertext is input
// (base64-decoded first when format=base64), and PKCS#7 padding ends it.
func (c *creation) decryptSecret(input []byte, source, format, keyID string) ([]byte, error) {
	key, err := c.registry.secretFor(keyID)
	if err != nil {
		return nil, c.errorf("keyid", "%v", err)
	}
	if len(key) != 32 {
		return nil, c.errorf("keyid", "secret %s is not 32 bytes long: AES-256-CBC needs a 32-byte key", keyID)
	}

	ivText, hasIV, err := c.str("iv")
	if err != nil {
		return nil, err
	}
	if !hasIV {
		return nil, c.errorf("", "missing property iv: keyid needs iv=BASE64 with the 16-byte IV the secret was encrypted with")
	}
	iv, err := decodeBase64([]byte(ivText))
	if err != nil {
		return nil, c.errorf("iv", "%v in %q: give the IV in base64", err, ivText)
	}
	if len(iv) != aes.BlockSize {
		return nil, c.errorf("iv", "the IV is %d bytes, not 16: give base64 of 16 bytes (24 characters)", len(iv))
	}

	ciphertext := input
	if format == SecretFormatBase64 {
		if ciphertext, err = decodeBase64(input); err != nil {
			return nil, c.errorf(source, "%v: the ciphertext must be base64 with format=base64", err)
		}
	}
	if len(ciphertext) == 0 || len(ciphertext)%aes.BlockSize != 0 {
		return nil, c.errorf(source, "the ciphertext is %d bytes, not a positive multiple of 16: give the whole AES-256-CBC output and check format=", len(ciphertext))
	}

	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, c.errorf("keyid", "%v", err)
	}
	plain := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, ciphertext)

	// NOTE: QEMU checks only that the last byte is at most 16 and accepts
	// 0. A full PKCS#7 check rejects most wrong keys or IVs instead of
	// yielding garbage, and accepts everything openssl enc produces.
	n := int(plain[len(plain)-1])
	if n == 0 || n > aes.BlockSize || !bytes.Equal(plain[len(plain)-n:], bytes.Repeat([]byte{byte(n)}, n)) {
		clear(plain)
		return nil, c.errorf(source, "decryption failed (invalid PKCS#7 padding): check that keyid names the right key and iv the right IV")
	}
	return plain[:len(plain)-n], nil
}

// decodeBase64 decodes standard base64 as QEMU's qbase64_decode accepts
// it: only the base64 alphabet, '=' and newlines, padding optional. Its
// errors never include the input.
func decodeBase64(input []byte) ([]byte, error) {
	for _, c := range input {
		if !isLetter(c) && !isDigit(c) && c != '+' && c != '/' && c != '=' && c != '\n' {
			return nil, errors.New("invalid base64: the data contains characters outside A-Z, a-z, 0-9, +, / and =")
		}
	}
	compact := bytes.ReplaceAll(input, []byte("\n"), nil)
	unpadded := bytes.TrimRight(compact, "=")
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(unpadded)))
	n, err := base64.RawStdEncoding.Decode(out, unpadded)
	if err != nil {
		return nil, errors.New("invalid base64: misplaced '=' or a truncated last group")
	}
	return out[:n], nil
}
