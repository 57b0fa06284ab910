package tls13

// Known-answer tests of the external-PSK key schedule against sessions
// recorded between the GnuTLS 3.7.9 tools. GnuTLS is the TLS library of
// QEMU, libnbd and nbdkit.
//
// testdata/record.sh recorded them on loopback: gnutls-serv --echo
// --pskpasswd testdata/psk.txt, and gnutls-cli --pskusername gonbd-test
// --pskkey KEY --keymatexport EXPORTER-gonbd-test --keymatexportsize 32,
// with SSLKEYLOGFILE set, sending one line of application data. The
// --priority strings select the mode, suite and group of each session (see
// record.sh). testdata/relay.go sat between the two and wrote every TLS
// record to gnutls-NAME.records ("C" client to server, "S" server to
// client). gnutls-NAME.keylog is the client's NSS key log, identical to the
// server's, and gnutls-NAME.exporter the keying material that gnutls-cli
// exported. The PSK in psk.txt is a test-only key.
//
// What the recordings pin, using gonbd's own functions:
//   - psk_dhe_ke sessions: the ephemeral (EC)DHE private keys are not in the
//     recording, so the handshake secret, the master secret and every
//     secret derived from them cannot be recomputed. Recomputed from the PSK
//     alone: the early secret, the "ext binder" binder (also after a
//     HelloRetryRequest), and the client early traffic and early exporter
//     secrets. Recomputed from the logged traffic secrets: traffic keys and
//     IVs (every protected record decrypts, and the client's records and
//     the server's EncryptedExtensions and Finished seal to the recorded
//     bytes), both Finished MACs over the recorded transcript, and the
//     exported keying material. keyschedule_gnutls_peer_test.go pins the
//     rest with seeded sessions between gonbd and GnuTLS.
//   - psk_ke sessions (gnutls "+PSK" without "+ECDHE-PSK"): the whole
//     schedule follows from the PSK, so every secret in the key log is
//     recomputed. gonbd's handshakes refuse psk_ke, but the schedule
//     functions are the same.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gnutlsApplicationData is the line gnutls-cli sent and gnutls-serv echoed.
const gnutlsApplicationData = "gonbd known-answer test\n"

// gnutlsExporterLabel is the --keymatexport label of the recordings.
const gnutlsExporterLabel = "EXPORTER-gonbd-test"

// gnutlsSessions lists the recordings and what the server selected. group
// is 0 for psk_ke, which has no key exchange.
var gnutlsSessions = []struct {
	name  string
	suite uint16
	group uint16
	hrr   bool
}{
	{"psk-dhe-chacha20-x25519", TLSChaCha20Poly1305SHA256, GroupX25519, false},
	{"psk-dhe-aes128gcm-x25519", TLSAES128GCMSHA256, GroupX25519, false},
	{"psk-dhe-chacha20-secp256r1", TLSChaCha20Poly1305SHA256, GroupSecp256r1, false},
	{"psk-dhe-aes128gcm-secp256r1", TLSAES128GCMSHA256, GroupSecp256r1, false},
	{"psk-dhe-aes128gcm-hrr", TLSAES128GCMSHA256, GroupSecp384r1, true},
	{"psk-ke-aes128gcm", TLSAES128GCMSHA256, 0, false},
	{"psk-ke-chacha20", TLSChaCha20Poly1305SHA256, 0, false},
}

// gnutlsSession is one recorded session.
type gnutlsSession struct {
	identity string
	psk      []byte
	suite    *Suite
	// client and server are the records each side sent, in order.
	client, server [][]byte
	// keylog maps an NSS key log label to its secrets in log order.
	keylog map[string][][]byte
	// exporter is the keying material gnutls-cli exported, if recorded.
	exporter []byte

	// The unprotected handshake messages. clientHello1 and
	// helloRetryRequest are set only after a HelloRetryRequest;
	// clientHello is then the second ClientHello.
	clientHello1      []byte
	helloRetryRequest []byte
	clientHello       []byte
	serverHello       []byte
}

// loadGnuTLSSession reads testdata/BASE.records, BASE.keylog and, if it
// exists, BASE.exporter.
func loadGnuTLSSession(t *testing.T, base string, suite uint16, hrr bool) *gnutlsSession {
	t.Helper()
	s := &gnutlsSession{suite: SuiteByID(suite), keylog: map[string][][]byte{}}
	require.NotNil(t, s.suite)

	s.identity, s.psk = readRecordedPSK(t)
	for _, line := range readLines(t, base+".records") {
		dir, recHex, ok := strings.Cut(line, " ")
		require.True(t, ok, "malformed record line %q", line)
		switch dir {
		case "C":
			s.client = append(s.client, unhex(t, recHex))
		case "S":
			s.server = append(s.server, unhex(t, recHex))
		default:
			t.Fatalf("record line has direction %q, want C or S", dir)
		}
	}
	var clientRandoms []string
	for _, line := range readLines(t, base+".keylog") {
		fields := strings.Fields(line)
		require.Len(t, fields, 3, "malformed key log line %q", line)
		clientRandoms = append(clientRandoms, fields[1])
		s.keylog[fields[0]] = append(s.keylog[fields[0]], unhex(t, fields[2]))
	}
	if _, err := os.Stat(filepath.Join("testdata", base+".exporter")); err == nil {
		exporter := readLines(t, base+".exporter")
		require.Len(t, exporter, 1)
		s.exporter = unhex(t, exporter[0])
	}

	clientMsgs := plaintextHandshake(t, s.client)
	serverMsgs := plaintextHandshake(t, s.server)
	if hrr {
		require.Len(t, clientMsgs, 2, "ClientHello1 and ClientHello2")
		require.Len(t, serverMsgs, 2, "HelloRetryRequest and ServerHello")
		s.clientHello1, s.clientHello = clientMsgs[0], clientMsgs[1]
		s.helloRetryRequest, s.serverHello = serverMsgs[0], serverMsgs[1]
	} else {
		require.Len(t, clientMsgs, 1, "ClientHello")
		require.Len(t, serverMsgs, 1, "ServerHello")
		s.clientHello, s.serverHello = clientMsgs[0], serverMsgs[0]
	}

	// Every key log line names the session by the first ClientHello's
	// random.
	first, err := parseClientHello(s.firstClientHello())
	require.NoError(t, err)
	for _, random := range clientRandoms {
		assert.Equal(t, hex.EncodeToString(first.random), random)
	}
	return s
}

// readRecordedPSK returns the identity and key of testdata/psk.txt, a
// gnutls-serv --pskpasswd file.
func readRecordedPSK(t *testing.T) (identity string, key []byte) {
	t.Helper()
	lines := readLines(t, "psk.txt")
	require.Len(t, lines, 1)
	identity, keyHex, ok := strings.Cut(lines[0], ":")
	require.True(t, ok, "testdata/psk.txt is not IDENTITY:HEXKEY")
	return identity, unhex(t, keyHex)
}

func readLines(t *testing.T, name string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	require.NoError(t, err)
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			lines = append(lines, line)
		}
	}
	require.NoError(t, sc.Err())
	return lines
}

// plaintextHandshake returns the handshake messages of the unprotected
// handshake records, reassembled with the package's own message framing.
func plaintextHandshake(t *testing.T, records [][]byte) [][]byte {
	t.Helper()
	var buf []byte
	var msgs [][]byte
	for _, rec := range records {
		if rec[0] != recordTypeHandshake {
			continue
		}
		buf = append(buf, rec[recordHeaderLen:]...)
		for {
			msg, ok, err := nextHandshakeMessage(&buf)
			require.NoError(t, err)
			if !ok {
				break
			}
			msgs = append(msgs, msg)
		}
	}
	require.Empty(t, buf, "incomplete handshake message")
	return msgs
}

func (s *gnutlsSession) firstClientHello() []byte {
	if s.clientHello1 != nil {
		return s.clientHello1
	}
	return s.clientHello
}

// secret returns the only secret logged under label.
func (s *gnutlsSession) secret(t *testing.T, label string) []byte {
	t.Helper()
	secrets := s.keylog[label]
	require.Len(t, secrets, 1, "key log lines %s", label)
	return secrets[0]
}

// helloTranscript returns the transcript up to, not including, the
// ClientHello that the server accepted: empty, or the message_hash of
// ClientHello1 and the HelloRetryRequest.
func (s *gnutlsSession) helloTranscript() transcript {
	tr := transcript{suite: s.suite}
	if s.helloRetryRequest != nil {
		tr.add(messageHash(s.suite.Hash, s.clientHello1), s.helloRetryRequest)
	}
	return tr
}

// lookupKey is a server's Config.LookupKey holding the recorded PSK.
func (s *gnutlsSession) lookupKey(identity string) []byte {
	if identity == s.identity {
		return s.psk
	}
	return nil
}

// handshakeSecret returns the handshake secret when it follows from the
// PSK, which is only so for psk_ke, and nil otherwise.
func (s *gnutlsSession) handshakeSecret(t *testing.T) []byte {
	t.Helper()
	sh, err := parseServerHello(s.serverHello)
	require.NoError(t, err)
	if sh.hasKeyShare {
		return nil
	}
	h := s.suite.Hash
	return handshakeSecret(h, earlySecret(h, s.psk), nil)
}

func TestKeyScheduleGnuTLSServerHello(t *testing.T) {
	for _, tc := range gnutlsSessions {
		t.Run(tc.name, func(t *testing.T) {
			s := loadGnuTLSSession(t, "gnutls-"+tc.name, tc.suite, tc.hrr)
			sh, err := parseServerHello(s.serverHello)
			require.NoError(t, err)
			assert.False(t, sh.isHelloRetryRequest())
			assert.Equal(t, tc.suite, sh.cipherSuite)
			assert.Equal(t, versionTLS13, sh.supportedVersion)
			assert.True(t, sh.hasPreSharedKey)
			assert.Equal(t, uint16(0), sh.selectedIdentity)
			assert.Equal(t, tc.group != 0, sh.hasKeyShare)
			if tc.group != 0 {
				assert.Equal(t, GroupName(tc.group), GroupName(sh.keyShare.group))
			}

			if tc.hrr {
				hrr, err := parseServerHello(s.helloRetryRequest)
				require.NoError(t, err)
				assert.True(t, hrr.isHelloRetryRequest())
				assert.Equal(t, GroupName(tc.group), GroupName(hrr.keyShare.group))
			}
		})
	}
}

// The binder of every recorded ClientHello verifies through the server's
// own check, which hashes the partial ClientHello with the transcript
// that precedes it and keys the MAC with the "ext binder" secret.
func TestKeyScheduleGnuTLSBinder(t *testing.T) {
	for _, tc := range gnutlsSessions {
		t.Run(tc.name, func(t *testing.T) {
			s := loadGnuTLSSession(t, "gnutls-"+tc.name, tc.suite, tc.hrr)
			h := s.suite.Hash
			ch, err := parseClientHello(s.clientHello)
			require.NoError(t, err)
			require.Len(t, ch.pskIdentities, 1)
			assert.Equal(t, s.identity, string(ch.pskIdentities[0].identity))
			// gnutls-cli sends an external PSK with obfuscated_ticket_age 0
			// (RFC 8446 section 4.2.11).
			assert.Equal(t, uint32(0), ch.pskIdentities[0].age)

			// The client writes its binder into the last HashLen bytes
			// and hashes what precedes the binders vector; a GnuTLS
			// ClientHello has the same layout.
			require.Len(t, ch.pskBinders, 1)
			assert.Equal(t, s.clientHello[:len(s.clientHello)-s.suite.HashLen-3], ch.truncated())
			assert.Equal(t, s.clientHello[len(s.clientHello)-s.suite.HashLen:], ch.pskBinders[0])

			hs := &serverHandshake{
				c:          newConn(nil, false),
				cfg:        &Config{LookupKey: s.lookupKey},
				ch:         ch,
				suite:      s.suite,
				transcript: s.helloTranscript(),
			}
			require.NoError(t, hs.verifyBinder())
			assert.Equal(t, s.identity, hs.identity)
			assert.Equal(t, earlySecret(h, s.psk), hs.early)

			tr := s.helloTranscript()
			want := finishedMAC(h, binderKey(h, earlySecret(h, s.psk), true), tr.sumWith(ch.truncated()))
			assert.Equal(t, want, ch.pskBinders[0])

			if tc.hrr {
				// ClientHello1's binder covers only ClientHello1.
				ch1, err := parseClientHello(s.clientHello1)
				require.NoError(t, err)
				hs1 := &serverHandshake{
					c:          newConn(nil, false),
					cfg:        &Config{LookupKey: s.lookupKey},
					ch:         ch1,
					suite:      s.suite,
					transcript: transcript{suite: s.suite},
				}
				require.NoError(t, hs1.verifyBinder())
				assert.NotEqual(t, ch1.pskBinders[0], ch.pskBinders[0])
			}
		})
	}
}

// A binder keyed with the resumption label does not verify, so the
// binder test above would catch a swapped label.
func TestKeyScheduleGnuTLSBinderRejectsResumptionLabel(t *testing.T) {
	tc := gnutlsSessions[0]
	s := loadGnuTLSSession(t, "gnutls-"+tc.name, tc.suite, tc.hrr)
	h := s.suite.Hash
	ch, err := parseClientHello(s.clientHello)
	require.NoError(t, err)
	tr := s.helloTranscript()
	resumption := finishedMAC(h, binderKey(h, earlySecret(h, s.psk), false), tr.sumWith(ch.truncated()))
	assert.NotEqual(t, resumption, ch.pskBinders[0])
}

// The client early traffic secret and the early exporter secret derive
// from the PSK and the ClientHello, so they are recomputable even with
// (EC)DHE.
func TestKeyScheduleGnuTLSEarlySecrets(t *testing.T) {
	for _, tc := range gnutlsSessions {
		t.Run(tc.name, func(t *testing.T) {
			s := loadGnuTLSSession(t, "gnutls-"+tc.name, tc.suite, tc.hrr)
			h := s.suite.Hash
			early := earlySecret(h, s.psk)

			// GnuTLS logs both secrets once per ClientHello. The first
			// covers ClientHello1, the only one that 0-RTT data may
			// follow; after a HelloRetryRequest the second covers the
			// transcript up to and including ClientHello2.
			hellos := []transcript{{suite: s.suite}}
			hellos[0].add(s.firstClientHello())
			if tc.hrr {
				tr := s.helloTranscript()
				tr.add(s.clientHello)
				hellos = append(hellos, tr)
			}
			require.Len(t, s.keylog["CLIENT_EARLY_TRAFFIC_SECRET"], len(hellos))
			require.Len(t, s.keylog["EARLY_EXPORTER_SECRET"], len(hellos))
			for i, tr := range hellos {
				assert.Equal(t, s.keylog["CLIENT_EARLY_TRAFFIC_SECRET"][i], deriveSecret(h, early, "c e traffic", tr.sum()), "ClientHello %d", i+1)
				assert.Equal(t, s.keylog["EARLY_EXPORTER_SECRET"][i], deriveSecret(h, early, "e exp master", tr.sum()), "ClientHello %d", i+1)
			}
		})
	}
}

// In psk_ke mode the handshake secret follows from the PSK, so every
// secret GnuTLS logged is recomputed.
func TestKeyScheduleGnuTLSPSKOnlySecrets(t *testing.T) {
	for _, tc := range gnutlsSessions {
		if tc.group != 0 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			s := loadGnuTLSSession(t, "gnutls-"+tc.name, tc.suite, tc.hrr)
			h := s.suite.Hash
			hsSecret := s.handshakeSecret(t)
			require.NotNil(t, hsSecret)

			tr := s.helloTranscript()
			tr.add(s.clientHello, s.serverHello)
			clientHS := deriveSecret(h, hsSecret, "c hs traffic", tr.sum())
			serverHS := deriveSecret(h, hsSecret, "s hs traffic", tr.sum())
			assert.Equal(t, s.secret(t, "CLIENT_HANDSHAKE_TRAFFIC_SECRET"), clientHS)
			assert.Equal(t, s.secret(t, "SERVER_HANDSHAKE_TRAFFIC_SECRET"), serverHS)

			// The application secrets cover the transcript through the
			// server Finished, which the replay reads back.
			ee, serverFinished := serverHandshakeFlight(t, s, serverHS)
			tr.add(ee, serverFinished)
			master := masterSecret(h, hsSecret)
			assert.Equal(t, s.secret(t, "CLIENT_TRAFFIC_SECRET_0"), deriveSecret(h, master, "c ap traffic", tr.sum()))
			assert.Equal(t, s.secret(t, "SERVER_TRAFFIC_SECRET_0"), deriveSecret(h, master, "s ap traffic", tr.sum()))
			assert.Equal(t, s.secret(t, "EXPORTER_SECRET"), deriveSecret(h, master, "exp master", tr.sum()))
		})
	}
}

// serverHandshakeFlight decrypts the server's EncryptedExtensions and
// Finished with the package's record layer.
func serverHandshakeFlight(t *testing.T, s *gnutlsSession, serverHS []byte) (ee, finished []byte) {
	t.Helper()
	conn, _ := replayConn(t, s.server)
	c := newConn(conn, true)
	for range len(plaintextHandshake(t, s.server)) {
		_, err := c.readHandshakeMessage()
		require.NoError(t, err)
	}
	require.NoError(t, c.keysChangeOnRead(s.suite, serverHS))
	ee, err := c.expectMessage(typeEncryptedExtensions, "EncryptedExtensions")
	require.NoError(t, err)
	finished, err = c.expectMessage(typeFinished, "Finished")
	require.NoError(t, err)
	return ee, finished
}

// The exported keying material follows from the logged exporter secret
// (RFC 8446 section 7.5), with the empty context gnutls-cli uses.
func TestKeyScheduleGnuTLSExporter(t *testing.T) {
	for _, tc := range gnutlsSessions {
		t.Run(tc.name, func(t *testing.T) {
			s := loadGnuTLSSession(t, "gnutls-"+tc.name, tc.suite, tc.hrr)
			require.Len(t, s.exporter, 32, "--keymatexportsize")
			h := s.suite.Hash
			secret := deriveSecret(h, s.secret(t, "EXPORTER_SECRET"), gnutlsExporterLabel, emptyHash(h))
			assert.Equal(t, s.exporter, expandLabel(h, secret, "exporter", emptyHash(h), len(s.exporter)))
		})
	}
}

// The client half of the handshake runs on the recorded server flight:
// the GnuTLS server's Finished verifies, the client Finished and the
// application data seal to the bytes gnutls-cli sent, and the echo
// decrypts.
func TestKeyScheduleGnuTLSClientReplay(t *testing.T) {
	for _, tc := range gnutlsSessions {
		t.Run(tc.name, func(t *testing.T) {
			s := loadGnuTLSSession(t, "gnutls-"+tc.name, tc.suite, tc.hrr)
			clientHS := s.secret(t, "CLIENT_HANDSHAKE_TRAFFIC_SECRET")
			serverHS := s.secret(t, "SERVER_HANDSHAKE_TRAFFIC_SECRET")
			clientAP := s.secret(t, "CLIENT_TRAFFIC_SECRET_0")
			serverAP := s.secret(t, "SERVER_TRAFFIC_SECRET_0")

			conn, written := replayConn(t, s.server)
			c := newConn(conn, true)
			for range len(plaintextHandshake(t, s.server)) {
				_, err := c.readHandshakeMessage()
				require.NoError(t, err)
			}
			require.NoError(t, c.keysChangeOnRead(s.suite, serverHS))
			require.NoError(t, c.keysChangeOnWrite(s.suite, clientHS))
			hs := &clientHandshake{c: c, suite: s.suite, transcript: s.helloTranscript()}
			hs.transcript.add(s.clientHello, s.serverHello)

			// readServerFlight also derives the application secrets. With
			// (EC)DHE the handshake secret is unknown, so the keys it
			// derives are replaced by the logged ones.
			hsSecret := s.handshakeSecret(t)
			require.NoError(t, hs.readServerFlight([3][]byte{clientHS, serverHS, hsSecret}))
			if hsSecret == nil {
				require.NoError(t, c.keysChangeOnRead(s.suite, serverAP))
				require.NoError(t, c.keysChangeOnWrite(s.suite, clientAP))
			}

			buf := make([]byte, 2*len(gnutlsApplicationData))
			n, err := io.ReadFull(c, buf[:len(gnutlsApplicationData)])
			require.NoError(t, err)
			assert.Equal(t, gnutlsApplicationData, string(buf[:n]))
			_, err = c.Read(buf)
			assert.ErrorIs(t, err, io.EOF, "close_notify after the echo")

			_, err = c.Write([]byte(gnutlsApplicationData))
			require.NoError(t, err)
			require.NoError(t, c.CloseWrite())
			assert.Equal(t, protectedRecords(s.client), splitRecords(t, written()))
		})
	}
}

// The server half of the handshake runs on the recorded client flight:
// the GnuTLS client's Finished verifies, the application data decrypts,
// and the server's EncryptedExtensions and Finished seal to the bytes
// gnutls-serv sent.
func TestKeyScheduleGnuTLSServerReplay(t *testing.T) {
	for _, tc := range gnutlsSessions {
		t.Run(tc.name, func(t *testing.T) {
			s := loadGnuTLSSession(t, "gnutls-"+tc.name, tc.suite, tc.hrr)
			clientHS := s.secret(t, "CLIENT_HANDSHAKE_TRAFFIC_SECRET")
			serverHS := s.secret(t, "SERVER_HANDSHAKE_TRAFFIC_SECRET")
			clientAP := s.secret(t, "CLIENT_TRAFFIC_SECRET_0")
			ee, serverFinished := serverHandshakeFlight(t, s, serverHS)

			conn, written := replayConn(t, s.client)
			c := newConn(conn, false)
			for range len(plaintextHandshake(t, s.client)) {
				_, err := c.expectMessage(typeClientHello, "ClientHello")
				require.NoError(t, err)
			}
			hs := &serverHandshake{c: c, suite: s.suite, transcript: s.helloTranscript()}
			hs.transcript.add(s.clientHello, s.serverHello, ee, serverFinished)

			// The server's Finished MAC is what gnutls-serv sent.
			tr := s.helloTranscript()
			tr.add(s.clientHello, s.serverHello, ee)
			assert.Equal(t, finishedMAC(s.suite.Hash, serverHS, tr.sum()), serverFinished[4:])

			require.NoError(t, c.keysChangeOnRead(s.suite, clientHS))
			require.NoError(t, hs.readClientFinished([2][]byte{clientHS, clientAP}))
			buf := make([]byte, 2*len(gnutlsApplicationData))
			n, err := io.ReadFull(c, buf[:len(gnutlsApplicationData)])
			require.NoError(t, err)
			assert.Equal(t, gnutlsApplicationData, string(buf[:n]))
			_, err = c.Read(buf)
			assert.ErrorIs(t, err, io.EOF, "close_notify after the data")

			// gnutls-serv sends EncryptedExtensions and Finished in one
			// record each, unpadded.
			require.NoError(t, c.keysChangeOnWrite(s.suite, serverHS))
			require.NoError(t, c.out.appendRecords(recordTypeHandshake, ee))
			require.NoError(t, c.out.appendRecords(recordTypeHandshake, serverFinished))
			require.NoError(t, c.out.flush())
			assert.Equal(t, protectedRecords(s.server)[:2], splitRecords(t, written()))
		})
	}
}

// protectedRecords returns the records of type application_data, which
// after the handshake starts are the protected ones.
func protectedRecords(records [][]byte) [][]byte {
	var out [][]byte
	for _, rec := range records {
		if rec[0] == recordTypeApplicationData {
			out = append(out, rec)
		}
	}
	return out
}

func splitRecords(t *testing.T, stream []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(stream) > 0 {
		require.GreaterOrEqual(t, len(stream), recordHeaderLen)
		n := recordHeaderLen + int(binary.BigEndian.Uint16(stream[3:]))
		require.GreaterOrEqual(t, len(stream), n)
		out = append(out, stream[:n])
		stream = stream[n:]
	}
	return out
}

// replayConn returns one end of a loopback TCP connection whose other end
// sends records and then half-closes. written closes the returned end for
// writing and returns everything written to it.
func replayConn(t *testing.T, records [][]byte) (conn net.Conn, written func() []byte) {
	t.Helper()
	local, peer := tcpPair(t)
	go func() {
		_, _ = peer.Write(bytes.Join(records, nil))
		_ = peer.(*net.TCPConn).CloseWrite()
	}()
	received := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		received <- b
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	stop := watchContext(ctx, local)
	t.Cleanup(stop)
	return local, func() []byte {
		_ = local.(*net.TCPConn).CloseWrite()
		return <-received
	}
}
