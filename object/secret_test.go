package object

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gonbd/gonbd/internal/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Test vectors made with
//
//	printf '%s' PLAINTEXT | openssl enc -aes-256-cbc -a -A \
//	    -K 000102...1f -iv 6465...73
//
// The key is the bytes 0..31 and the IV the bytes 100..115.
const (
	vectorKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	vectorIV  = "ZGVmZ2hpamtsbW5vcHFycw=="
)

func TestSecretDecrypt(t *testing.T) {
	tests := []struct {
		name       string
		ciphertext string
		want       string
	}{
		{"Short", "Q1SMtLrJ8rgbUkdWx4qSCQ==", "hunter2"},
		{"Empty", "95X26IAv0VGgIaQRUNSraQ==", ""},
		{"FullBlock", "GfDaI073NTsf3vVUW1La/Xvwb9BT4BUGu5GThxDJ0pI=", "exactly16bytes!!"},
		{"WithComma", "oc5mbDgBTDWmktOqFkz8fTB1YSkO72H7aMiMaVgUE2I=", "a longer secret, with a comma"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseAll([]string{
				"secret,id=key0,format=base64,data=" + vectorKey,
				"secret,id=sec0,keyid=key0,format=base64,iv=" + vectorIV + ",data=" + tt.ciphertext,
			})
			require.NoError(t, err)
			got, err := r.Secret("sec0")
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(got))
		})
	}
}

func TestSecretDecryptRawCiphertextFile(t *testing.T) {
	ciphertext, err := hex.DecodeString("43548cb4bac9f2b81b524756c78a9209")
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "sec.bin")
	require.NoError(t, os.WriteFile(path, ciphertext, 0o600))

	r, err := ParseAll([]string{
		"secret,id=key0,format=base64,data=" + vectorKey,
		"secret,id=sec0,keyid=key0,iv=" + vectorIV + ",file=" + path,
	})
	require.NoError(t, err)
	got, err := r.Secret("sec0")
	require.NoError(t, err)
	assert.Equal(t, "hunter2", string(got))
}

func TestSecretDecryptJSON(t *testing.T) {
	r, err := ParseAll([]string{
		`{"qom-type":"secret","id":"key0","format":"base64","data":"` + vectorKey + `"}`,
		`{"qom-type":"secret","id":"sec0","keyid":"key0","format":"base64","iv":"` + vectorIV + `","data":"Q1SMtLrJ8rgbUkdWx4qSCQ=="}`,
	})
	require.NoError(t, err)
	got, err := r.Secret("sec0")
	require.NoError(t, err)
	assert.Equal(t, "hunter2", string(got))
}

func TestSecretDecryptErrors(t *testing.T) {
	key := "secret,id=key0,format=base64,data=" + vectorKey
	tests := []struct {
		name     string
		earlier  []string
		spec     string
		wantErr  string
		property string
	}{
		{"KeyUnknown", nil, "secret,id=s0,keyid=key0,iv=" + vectorIV + ",data=x", `no secret with id "key0"`, "keyid"},
		{"KeyNotSecret", []string{"authz-simple,id=key0,identity=a"}, "secret,id=s0,keyid=key0,iv=" + vectorIV + ",data=x",
			"key0 has type authz-simple, not a secret", "keyid"},
		{"KeyTooShort", []string{"secret,id=key0,data=short"}, "secret,id=s0,keyid=key0,iv=" + vectorIV + ",data=x",
			"secret key0 is not 32 bytes long", "keyid"},
		{"NoIV", []string{key}, "secret,id=s0,keyid=key0,format=base64,data=Q1SMtLrJ8rgbUkdWx4qSCQ==", "missing property iv", ""},
		{"IVNotBase64", []string{key}, "secret,id=s0,keyid=key0,iv=!!,format=base64,data=Q1SMtLrJ8rgbUkdWx4qSCQ==", "invalid base64", "iv"},
		{"IVWrongLength", []string{key}, "secret,id=s0,keyid=key0,iv=AAAA,format=base64,data=Q1SMtLrJ8rgbUkdWx4qSCQ==",
			"the IV is 3 bytes, not 16", "iv"},
		{"CiphertextNotBase64", []string{key}, "secret,id=s0,keyid=key0,iv=" + vectorIV + ",format=base64,data=@",
			"invalid base64", "data"},
		{"CiphertextNotBlocks", []string{key}, "secret,id=s0,keyid=key0,iv=" + vectorIV + ",format=base64,data=AAAA",
			"the ciphertext is 3 bytes, not a positive multiple of 16", "data"},
		{"CiphertextEmpty", []string{key}, "secret,id=s0,keyid=key0,iv=" + vectorIV + ",format=base64,data=",
			"the ciphertext is 0 bytes", "data"},
		{"WrongIV", []string{key}, "secret,id=s0,keyid=key0,iv=AAAAAAAAAAAAAAAAAAAAAA==,format=base64,data=Q1SMtLrJ8rgbUkdWx4qSCQ==",
			"decryption failed (invalid PKCS#7 padding)", "data"},
		{"WrongKey", []string{"secret,id=key0,data=" + strings.Repeat("k", 32)},
			"secret,id=s0,keyid=key0,iv=" + vectorIV + ",format=base64,data=Q1SMtLrJ8rgbUkdWx4qSCQ==",
			"decryption failed", "data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRegistry()
			for _, spec := range tt.earlier {
				require.NoError(t, r.Add(spec))
			}
			err := r.Add(tt.spec)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
			var objectErr *Error
			require.ErrorAs(t, err, &objectErr)
			assert.Equal(t, tt.property, objectErr.Property)
		})
	}
}

// TestSecretDecryptOpenSSL encrypts a random secret under a random key
// with openssl enc, as QEMU's documentation shows, and decrypts it.
func TestSecretDecryptOpenSSL(t *testing.T) {
	openssl := requireTool(t, "openssl")
	key := make([]byte, 32)
	iv := make([]byte, 16)
	plain := make([]byte, 45)
	for _, b := range [][]byte{key, iv, plain} {
		_, err := rand.Read(b)
		require.NoError(t, err)
	}
	dir := t.TempDir()
	plainFile := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plainFile, plain, 0o600))

	cmd := exec.Command(openssl, "enc", "-aes-256-cbc", "-a", "-A",
		"-K", hex.EncodeToString(key), "-iv", hex.EncodeToString(iv), "-in", plainFile)
	out, err := cmd.Output()
	require.NoError(t, err, "openssl enc")

	keyFile := filepath.Join(dir, "key.b64")
	require.NoError(t, os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600))
	r, err := ParseAll([]string{
		"secret,id=key0,format=base64,file=" + keyFile,
		fmt.Sprintf("secret,id=sec0,keyid=key0,format=base64,iv=%s,data=%s",
			base64.StdEncoding.EncodeToString(iv), strings.TrimSpace(string(out))),
	})
	require.NoError(t, err)
	got, err := r.Secret("sec0")
	require.NoError(t, err)
	assert.Equal(t, plain, got)
}

func TestSecretFormats(t *testing.T) {
	dir := t.TempDir()
	rawFile := filepath.Join(dir, "raw")
	require.NoError(t, os.WriteFile(rawFile, []byte("pass\n"), 0o600))
	b64File := filepath.Join(dir, "b64")
	require.NoError(t, os.WriteFile(b64File, []byte("cGFzcw==\n"), 0o600))

	tests := []struct {
		name string
		spec string
		want string
	}{
		{"RawData", "secret,id=s0,data=pass", "pass"},
		{"RawDataComma", "secret,id=s0,data=a,,b", "a,b"},
		{"RawFileKeepsNewline", "secret,id=s0,file=" + rawFile, "pass\n"},
		{"Base64Data", "secret,id=s0,format=base64,data=cGFzcw==", "pass"},
		{"Base64Unpadded", "secret,id=s0,format=base64,data=cGFzcw", "pass"},
		{"Base64FileNewline", "secret,id=s0,format=base64,file=" + b64File, "pass"},
		{"EmptyData", "secret,id=s0,data=", ""},
		{"IVWithoutKeyIgnored", "secret,id=s0,data=pass,iv=AAAA", "pass"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseAll([]string{tt.spec})
			require.NoError(t, err)
			got, err := r.Secret("s0")
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(got))
		})
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	r, err := ParseAll([]string{"secret,id=s0,data=hunter2"})
	require.NoError(t, err)
	obj, err := r.Lookup("s0")
	require.NoError(t, err)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		assert.NotContains(t, fmt.Sprintf(verb, obj), "hunter2", verb)
		assert.NotContains(t, fmt.Sprintf(verb, obj), hex.EncodeToString([]byte("hunter2")), verb)
	}
	assert.Equal(t, "secret(s0)", fmt.Sprint(obj))

	// Errors about a secret's data never echo it.
	err = NewRegistry().Add("secret,id=s0,format=base64,data=hunter2!")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "hunter2")
}

// requireTool returns the path of a peer tool, failing the test under CI=true
// and skipping it otherwise when the tool is missing.
var requireTool = testenv.RequireTool
