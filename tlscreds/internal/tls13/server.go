package tls13

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hmac"
	"net"
	"slices"
)

// earlyDataSkipLimit is how many bytes of 0-RTT records a server skips
// after refusing early data. This side never issues tickets, so only a
// client provisioned with early data for an external PSK sends any.
const earlyDataSkipLimit = 16 * maxRecord

// ServerHandshake runs the server side of a PSK handshake on conn. On
// failure it sends the matching alert and returns a *HandshakeError; the
// caller closes conn.
func ServerHandshake(ctx context.Context, conn net.Conn, cfg *Config) (*Conn, error) {
	c := newConn(conn, false)
	hs := &serverHandshake{c: c, cfg: cfg, transcript: transcript{suite: pskSuite}}
	defer watchContext(ctx, conn)()
	if err := hs.handshake(); err != nil {
		return nil, c.abort(contextError(ctx, err), hs.identity)
	}
	return c, nil
}

type serverHandshake struct {
	c          *Conn
	cfg        *Config
	ch         *clientHello
	transcript transcript
	suite      *Suite
	group      uint16
	identity   string
	psk        []byte
	early      []byte
	sentHRR    bool
	sentCCS    bool
	selected   uint16
}

func (hs *serverHandshake) handshake() error {
	if err := hs.readClientHello(); err != nil {
		return err
	}
	share, err := hs.processClientHello()
	if err != nil {
		return err
	}
	if share == nil {
		if err := hs.sendHelloRetryRequest(); err != nil {
			return err
		}
		if err := hs.readClientHello(); err != nil {
			return err
		}
		if share, err = hs.processClientHello(); err != nil {
			return err
		}
		if share == nil {
			return alertf(AlertIllegalParameter, "second ClientHello has no key share for %s", GroupName(hs.group))
		}
	}
	trafficSecrets, err := hs.sendServerFlight(share)
	if err != nil {
		return err
	}
	return hs.readClientFinished(trafficSecrets)
}

func (hs *serverHandshake) readClientHello() error {
	msg, err := hs.c.expectMessage(typeClientHello, "ClientHello")
	if err != nil {
		return err
	}
	ch, err := parseClientHello(msg)
	if err != nil {
		return err
	}
	if hs.ch != nil && !bytes.Equal(ch.sessionID, hs.ch.sessionID) {
		return alertf(AlertIllegalParameter, "second ClientHello changed legacy_session_id")
	}
	hs.ch = ch
	return nil
}

// processClientHello checks the ClientHello, picks suite, group and PSK
// and verifies the binder. It returns the client's key share for the
// chosen group, or nil when a HelloRetryRequest must ask for one.
func (hs *serverHandshake) processClientHello() (*keyShare, error) {
	ch := hs.ch
	if !slices.Contains(ch.supportedVersions, versionTLS13) {
		return nil, alertf(AlertProtocolVersion, "client does not offer TLS 1.3")
	}
	if !bytes.Equal(ch.compression, []byte{0}) {
		return nil, alertf(AlertIllegalParameter, "client offers compression")
	}
	if !ch.hasPreSharedKey {
		return nil, alertf(AlertHandshakeFailure, "client offers no pre-shared key, and certificates are not supported")
	}
	if ch.pskModes == nil {
		return nil, alertf(AlertMissingExtension, "client offers pre_shared_key without psk_key_exchange_modes")
	}
	if !slices.Contains(ch.pskModes, pskModeDHE) {
		return nil, alertf(AlertHandshakeFailure, "client does not offer psk_dhe_ke, the only PSK mode supported")
	}
	if !ch.hasKeyShare || ch.supportedGroups == nil {
		return nil, alertf(AlertMissingExtension, "client sends no key_share or supported_groups")
	}
	if hs.sentHRR && ch.earlyData {
		return nil, alertf(AlertIllegalParameter, "client offers early data after a HelloRetryRequest")
	}

	if err := hs.pickSuite(); err != nil {
		return nil, err
	}
	share, err := hs.pickGroup()
	if err != nil {
		return nil, err
	}
	if err := hs.verifyBinder(); err != nil {
		return nil, err
	}
	return share, nil
}

// pickSuite chooses the suite. A client that lists AES-GCM before
// ChaCha20-Poly1305 is taken to have AES hardware; AES-GCM wins only when
// both ends have it, because ChaCha20-Poly1305 is faster in software.
func (hs *serverHandshake) pickSuite() error {
	ours := hs.cfg.suites()
	clientPrefersAES := false
	for _, id := range hs.ch.cipherSuites {
		if id == TLSChaCha20Poly1305SHA256 {
			break
		}
		if isAESGCM(id) {
			clientPrefersAES = true
			break
		}
	}
	if !(hasAESHardware && clientPrefersAES) {
		slices.SortStableFunc(ours, func(a, b uint16) int {
			return boolToInt(isAESGCM(a)) - boolToInt(isAESGCM(b))
		})
	}
	for _, id := range ours {
		if !slices.Contains(hs.ch.cipherSuites, id) {
			continue
		}
		if hs.sentHRR && id != hs.suite.ID {
			// The suite was fixed by the HelloRetryRequest.
			continue
		}
		hs.suite = SuiteByID(id)
		hs.c.suite = hs.suite
		return nil
	}
	if hs.sentHRR {
		return alertf(AlertIllegalParameter, "second ClientHello drops cipher suite %s", hs.suite.Name)
	}
	return alertf(AlertHandshakeFailure, "no cipher suite in common with the client")
}

func boolToInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// pickGroup picks the first of the server's groups that the client sent
// a key share for. Failing that, it picks the first of the server's groups
// that the client supports, for a HelloRetryRequest. Server order puts
// X25519, the fastest, first even when the client sends a secp256r1 share
// first, as gnutls-cli 3.7.9 with its NORMAL priority does.
func (hs *serverHandshake) pickGroup() (*keyShare, error) {
	ours := hs.cfg.groups()
	for _, g := range ours {
		if hs.sentHRR && g != hs.group || !slices.Contains(hs.ch.supportedGroups, g) {
			continue
		}
		for i := range hs.ch.keyShares {
			if hs.ch.keyShares[i].group == g {
				hs.group = g
				return &hs.ch.keyShares[i], nil
			}
		}
	}
	if hs.sentHRR {
		return nil, nil
	}
	for _, g := range ours {
		if slices.Contains(hs.ch.supportedGroups, g) {
			hs.group = g
			return nil, nil
		}
	}
	return nil, alertf(AlertHandshakeFailure, "no key exchange group in common with the client")
}

// verifyBinder finds the first identity that has a key and checks its
// binder over the partial ClientHello (RFC 8446 section 4.2.11.2).
func (hs *serverHandshake) verifyBinder() error {
	idx := -1
	for i, id := range hs.ch.pskIdentities {
		if key := hs.cfg.LookupKey(string(id.identity)); key != nil {
			idx, hs.identity, hs.psk = i, string(id.identity), key
			break
		}
	}
	if idx < 0 {
		hs.identity = string(hs.ch.pskIdentities[0].identity)
		return alertf(AlertUnknownPSKIdentity, "unknown PSK identity %q", hs.identity)
	}
	hs.c.identity = hs.identity
	hs.selected = uint16(idx)

	h := hs.suite.Hash
	hs.early = earlySecret(h, hs.psk)
	want := finishedMAC(h, binderKey(h, hs.early, true), hs.transcript.sumWith(hs.ch.truncated()))
	if !hmac.Equal(want, hs.ch.pskBinders[idx]) {
		return alertf(AlertDecryptError, "PSK binder of identity %q does not verify: the keys differ", hs.identity)
	}
	return nil
}

// sendHelloRetryRequest requests a key share of hs.group and replaces
// ClientHello1 in the transcript by its hash.
func (hs *serverHandshake) sendHelloRetryRequest() error {
	hrr := marshalServerHello(&serverHello{
		random:      helloRetryRequestRandom[:],
		sessionID:   hs.ch.sessionID,
		cipherSuite: hs.suite.ID,
		keyShare:    keyShare{group: hs.group},
	})
	hs.transcript.msgs = nil
	hs.transcript.add(messageHash(hs.suite.Hash, hs.ch.raw), hrr)
	hs.sentHRR = true
	hs.c.helloRetried = true

	if err := hs.c.out.appendRecords(recordTypeHandshake, hrr); err != nil {
		return err
	}
	if err := hs.appendCompatibilityCCS(); err != nil {
		return err
	}
	return hs.c.out.flush()
}

// appendCompatibilityCCS sends the one change_cipher_spec record of
// middlebox compatibility mode, which a client that sent a session ID
// expects after the server's first handshake message (RFC 8446
// appendix D.4).
func (hs *serverHandshake) appendCompatibilityCCS() error {
	if hs.sentCCS || len(hs.ch.sessionID) == 0 {
		return nil
	}
	hs.sentCCS = true
	return hs.c.out.appendRecord(recordTypeChangeCipherSpec, []byte{1})
}

// sendServerFlight sends ServerHello, EncryptedExtensions and Finished in
// one write and returns the client handshake and application secrets.
func (hs *serverHandshake) sendServerFlight(peer *keyShare) ([2][]byte, error) {
	var secrets [2][]byte
	curve := curveForGroup(hs.group)
	peerKey, err := curve.NewPublicKey(peer.data)
	if err != nil {
		return secrets, alertf(AlertIllegalParameter, "invalid %s key share from the client", GroupName(hs.group))
	}
	priv, err := curve.GenerateKey(hs.cfg.rand())
	if err != nil {
		return secrets, alertf(AlertInternalError, "generate %s key: %v", GroupName(hs.group), err)
	}
	shared, err := priv.ECDH(peerKey)
	if err != nil {
		return secrets, alertf(AlertIllegalParameter, "invalid %s key share from the client", GroupName(hs.group))
	}
	hs.c.group = hs.group

	sh, err := hs.serverHello(priv)
	if err != nil {
		return secrets, err
	}
	hs.transcript.add(hs.ch.raw, sh)
	if err := hs.c.out.appendRecords(recordTypeHandshake, sh); err != nil {
		return secrets, err
	}
	if err := hs.appendCompatibilityCCS(); err != nil {
		return secrets, err
	}

	h := hs.suite.Hash
	hsSecret := handshakeSecret(h, hs.early, shared)
	clientHS := deriveSecret(h, hsSecret, "c hs traffic", hs.transcript.sum())
	serverHS := deriveSecret(h, hsSecret, "s hs traffic", hs.transcript.sum())
	if err := hs.c.keysChangeOnWrite(hs.suite, serverHS); err != nil {
		return secrets, err
	}
	if err := hs.c.keysChangeOnRead(hs.suite, clientHS); err != nil {
		return secrets, err
	}
	if hs.ch.earlyData {
		// Early data is refused by leaving early_data out of
		// EncryptedExtensions; the client's 0-RTT records, protected
		// with a key the server never derives, are skipped.
		hs.c.in.earlyDataBudget = earlyDataSkipLimit
	}

	ee := marshalHandshake(typeEncryptedExtensions, []byte{0, 0})
	hs.transcript.add(ee)
	fin := marshalHandshake(typeFinished, finishedMAC(h, serverHS, hs.transcript.sum()))
	hs.transcript.add(fin)
	if err := hs.c.out.appendRecords(recordTypeHandshake, append(ee, fin...)); err != nil {
		return secrets, err
	}
	if err := hs.c.out.flush(); err != nil {
		return secrets, err
	}

	master := masterSecret(h, hsSecret)
	clientAP := deriveSecret(h, master, "c ap traffic", hs.transcript.sum())
	serverAP := deriveSecret(h, master, "s ap traffic", hs.transcript.sum())
	if err := hs.c.keysChangeOnWrite(hs.suite, serverAP); err != nil {
		return secrets, err
	}
	return [2][]byte{clientHS, clientAP}, nil
}

func (hs *serverHandshake) serverHello(priv *ecdh.PrivateKey) ([]byte, error) {
	random := make([]byte, 32)
	if _, err := hs.cfg.rand().Read(random); err != nil {
		return nil, alertf(AlertInternalError, "read random: %v", err)
	}
	return marshalServerHello(&serverHello{
		random:           random,
		sessionID:        hs.ch.sessionID,
		cipherSuite:      hs.suite.ID,
		keyShare:         keyShare{group: hs.group, data: priv.PublicKey().Bytes()},
		selectedIdentity: hs.selected,
	}), nil
}

// readClientFinished checks the client's Finished and switches the read
// side to the client application secret.
func (hs *serverHandshake) readClientFinished(secrets [2][]byte) error {
	clientHS, clientAP := secrets[0], secrets[1]
	msg, err := hs.c.expectMessage(typeFinished, "Finished")
	if err != nil {
		return err
	}
	want := finishedMAC(hs.suite.Hash, clientHS, hs.transcript.sum())
	if !hmac.Equal(msg[4:], want) {
		return alertf(AlertDecryptError, "client Finished does not verify")
	}
	if err := hs.c.keysChangeOnRead(hs.suite, clientAP); err != nil {
		return err
	}
	return hs.c.finishHandshake()
}
