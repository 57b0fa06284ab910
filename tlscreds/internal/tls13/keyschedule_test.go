package tls13

import (
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unhex decodes the space-separated hex dumps of RFC 8448.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	require.NoError(t, err)
	return b
}

// RFC 8448 section 4: the resumed 0-RTT handshake. Its ClientHello (512
// bytes) carries one PSK whose binder uses the "res binder" label.
const rfc8448ResumedClientHello = `
01 00 01 fc 03 03 1b c3 ce b6 bb e3 9c ff
93 83 55 b5 a5 0a db 6d b2 1b 7a 6a f6 49 d7 b4 bc 41 9d 78 76
48 7d 95 00 00 06 13 01 13 03 13 02 01 00 01 cd 00 00 00 0b 00
09 00 00 06 73 65 72 76 65 72 ff 01 00 01 00 00 0a 00 14 00 12
00 1d 00 17 00 18 00 19 01 00 01 01 01 02 01 03 01 04 00 33 00
26 00 24 00 1d 00 20 e4 ff b6 8a c0 5f 8d 96 c9 9d a2 66 98 34
6c 6b e1 64 82 ba dd da fe 05 1a 66 b4 f1 8d 66 8f 0b 00 2a 00
00 00 2b 00 03 02 03 04 00 0d 00 20 00 1e 04 03 05 03 06 03 02
03 08 04 08 05 08 06 04 01 05 01 06 01 02 01 04 02 05 02 06 02
02 02 00 2d 00 02 01 01 00 1c 00 02 40 01 00 15 00 57 00 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
00 29 00 dd 00 b8 00 b2 2c 03 5d 82 93 59 ee 5f f7 af 4e c9 00
00 00 00 26 2a 64 94 dc 48 6d 2c 8a 34 cb 33 fa 90 bf 1b 00 70
ad 3c 49 88 83 c9 36 7c 09 a2 be 78 5a bc 55 cd 22 60 97 a3 a9
82 11 72 83 f8 2a 03 a1 43 ef d3 ff 5d d3 6d 64 e8 61 be 7f d6
1d 28 27 db 27 9c ce 14 50 77 d4 54 a3 66 4d 4e 6d a4 d2 9e e0
37 25 a6 a4 da fc d0 fc 67 d2 ae a7 05 29 51 3e 3d a2 67 7f a5
90 6c 5b 3f 7d 8f 92 f2 28 bd a4 0d da 72 14 70 f9 fb f2 97 b5
ae a6 17 64 6f ac 5c 03 27 2e 97 07 27 c6 21 a7 91 41 ef 5f 7d
e6 50 5e 5b fb c3 88 e9 33 43 69 40 93 93 4a e4 d3 57 fa d6 aa
cb 00 21 20 3a dd 4f b2 d8 fd f8 22 a0 ca 3c f7 67 8e f5 e8 8d
ae 99 01 41 c5 92 4d 57 bb 6f a3 1b 9e 5f 9d`

func TestKeyScheduleRFC8448ResumptionBinder(t *testing.T) {
	h := sha256.New
	psk := unhex(t, "4e cd 0e b6 ec 3b 4d 87 f5 d6 02 8f 92 2c a4 c5 85 1a 27 7f d4 13 11 c9 e6 2d 2c 94 92 e1 c4 f3")
	ch, err := parseClientHello(unhex(t, rfc8448ResumedClientHello))
	require.NoError(t, err)
	require.Len(t, ch.pskBinders, 1)

	early := earlySecret(h, psk)
	assert.Equal(t, unhex(t, "9b 21 88 e9 b2 fc 6d 64 d7 1d c3 29 90 0e 20 bb 41 91 50 00 f6 78 aa 83 9c bb 79 7c b7 d8 33 2c"), early)
	key := binderKey(h, early, false)
	assert.Equal(t, unhex(t, "69 fe 13 1a 3b ba d5 d6 3c 64 ee bc c3 0e 39 5b 9d 81 07 72 6a 13 d0 74 e3 89 db c8 a4 e4 72 56"), key)
	assert.Equal(t, unhex(t, "55 88 67 3e 72 cb 59 c8 7d 22 0c af fe 94 f2 de a9 a3 b1 60 9f 7d 50 e9 0a 48 22 7d b9 ed 7e aa"),
		expandLabel(h, key, "finished", nil, 32))

	binderHash := sha256.Sum256(ch.truncated())
	assert.Equal(t, unhex(t, "63 22 4b 2e 45 73 f2 d3 45 4c a8 4b 9d 00 9a 04 f6 be 9e 05 71 1a 83 96 47 3a ef a0 1e 92 4a 14"), binderHash[:])
	binder := finishedMAC(h, key, binderHash[:])
	assert.Equal(t, unhex(t, "3a dd 4f b2 d8 fd f8 22 a0 ca 3c f7 67 8e f5 e8 8d ae 99 01 41 c5 92 4d 57 bb 6f a3 1b 9e 5f 9d"), binder)
	assert.Equal(t, binder, ch.pskBinders[0])

	// The client early traffic secret is derived over the whole
	// ClientHello, binders included.
	chHash := sha256.Sum256(ch.raw)
	assert.Equal(t, unhex(t, "3f bb e6 a6 0d eb 66 c3 0a 32 79 5a ba 0e ff 7e aa 10 10 55 86 e7 be 5c 09 67 8d 63 b6 ca ab 62"),
		deriveSecret(h, early, "c e traffic", chHash[:]))
}

// The external binder differs from the resumption binder only by its
// label; this pins the "ext binder" derivation to an independent
// computation of HKDF-Expand-Label's info bytes.
func TestKeyScheduleExternalBinderLabel(t *testing.T) {
	h := sha256.New
	psk := unhex(t, "4e cd 0e b6 ec 3b 4d 87 f5 d6 02 8f 92 2c a4 c5 85 1a 27 7f d4 13 11 c9 e6 2d 2c 94 92 e1 c4 f3")
	early := earlySecret(h, psk)
	empty := sha256.Sum256(nil)

	info := append([]byte{0, 32, byte(len("tls13 ext binder"))}, "tls13 ext binder"...)
	info = append(info, 32)
	info = append(info, empty[:]...)
	want := hkdfExpandReference(early, info, 32)

	ext := binderKey(h, early, true)
	assert.Equal(t, want, ext)
	assert.NotEqual(t, binderKey(h, early, false), ext)
}

// hkdfExpandReference is HKDF-Expand (RFC 5869) for outputs of one
// SHA-256 block, written out with HMAC so that it does not share code
// with expandLabel.
func hkdfExpandReference(prk, info []byte, n int) []byte {
	mac := hmacSHA256(prk, append(append([]byte(nil), info...), 1))
	return mac[:n]
}

// RFC 8448 section 3: the (EC)DHE part of the schedule, with a zero PSK.
func TestKeyScheduleRFC8448HandshakeSecrets(t *testing.T) {
	h := sha256.New
	clientPriv := unhex(t, "49 af 42 ba 7f 79 94 85 2d 71 3e f2 78 4b cb ca a7 91 1d e2 6a dc 56 42 cb 63 45 40 e7 ea 50 05")
	serverPub := unhex(t, "c9 82 88 76 11 20 95 fe 66 76 2b db f7 c6 72 e1 56 d6 cc 25 3b 83 3d f1 dd 69 b1 b0 4e 75 1f 0f")
	priv, err := ecdh.X25519().NewPrivateKey(clientPriv)
	require.NoError(t, err)
	pub, err := ecdh.X25519().NewPublicKey(serverPub)
	require.NoError(t, err)
	shared, err := priv.ECDH(pub)
	require.NoError(t, err)
	assert.Equal(t, unhex(t, "8b d4 05 4f b5 5b 9d 63 fd fb ac f9 f0 4b 9f 0d 35 e6 d6 3f 53 75 63 ef d4 62 72 90 0f 89 49 2d"), shared)

	early := earlySecret(h, nil)
	assert.Equal(t, unhex(t, "33 ad 0a 1c 60 7e c0 3b 09 e6 cd 98 93 68 0c e2 10 ad f3 00 aa 1f 26 60 e1 b2 2e 10 f1 70 f9 2a"), early)
	hs := handshakeSecret(h, early, shared)
	assert.Equal(t, unhex(t, "1d c8 26 e9 36 06 aa 6f dc 0a ad c1 2f 74 1b 01 04 6a a6 b9 9f 69 1e d2 21 a9 f0 ca 04 3f be ac"), hs)

	helloHash := unhex(t, "86 0c 06 ed c0 78 58 ee 8e 78 f0 e7 42 8c 58 ed d6 b4 3f 2c a3 e6 e9 5f 02 ed 06 3c f0 e1 ca d8")
	clientHS := deriveSecret(h, hs, "c hs traffic", helloHash)
	assert.Equal(t, unhex(t, "b3 ed db 12 6e 06 7f 35 a7 80 b3 ab f4 5e 2d 8f 3b 1a 95 07 38 f5 2e 96 00 74 6a 0e 27 a5 5a 21"), clientHS)
	serverHS := deriveSecret(h, hs, "s hs traffic", helloHash)
	assert.Equal(t, unhex(t, "b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4 e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38"), serverHS)
	assert.Equal(t, unhex(t, "00 8d 3b 66 f8 16 ea 55 9f 96 b5 37 e8 85 c3 1f c0 68 bf 49 2c 65 2f 01 f2 88 a1 d8 cd c1 9f c8"),
		expandLabel(h, serverHS, "finished", nil, 32))

	master := masterSecret(h, hs)
	assert.Equal(t, unhex(t, "18 df 06 84 3d 13 a0 8b f2 a4 49 84 4c 5f 8a 47 80 01 bc 4d 4c 62 79 84 d5 a4 1d a8 d0 40 29 19"), master)
	finishedHash := unhex(t, "96 08 10 2a 0f 1c cc 6d b6 25 0b 7b 7e 41 7b 1a 00 0e aa da 3d aa e4 77 7a 76 86 c9 ff 83 df 13")
	clientAP := deriveSecret(h, master, "c ap traffic", finishedHash)
	assert.Equal(t, unhex(t, "9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 75 04 a5"), clientAP)
	serverAP := deriveSecret(h, master, "s ap traffic", finishedHash)
	assert.Equal(t, unhex(t, "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43"), serverAP)

	key, iv := trafficKeys(SuiteByID(TLSAES128GCMSHA256), serverAP)
	assert.Equal(t, unhex(t, "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56"), key)
	assert.Equal(t, unhex(t, "cf 78 2b 88 dd 83 54 9a ad f1 e9 84"), iv)
	key, iv = trafficKeys(SuiteByID(TLSAES128GCMSHA256), clientAP)
	assert.Equal(t, unhex(t, "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51"), key)
	assert.Equal(t, unhex(t, "5b 78 92 3d ee 08 57 90 33 e5 23 d9"), iv)
}

func TestHelloRetryRequestRandom(t *testing.T) {
	// The value printed in RFC 8446 section 4.1.3.
	assert.Equal(t, unhex(t, "CF 21 AD 74 E5 9A 61 11 BE 1D 8C 02 1E 65 B8 91 C2 A2 11 16 7A BB 8C 5E 07 9E 09 E2 C8 A8 33 9C"),
		helloRetryRequestRandom[:])
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}
