package tls13

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hmac"
	"net"
	"slices"
)

// ClientHandshake runs the client side of a PSK handshake on conn with
// cfg.Identity and cfg.Key. On failure it sends the matching alert and
// returns a *HandshakeError; the caller closes conn.
func ClientHandshake(ctx context.Context, conn net.Conn, cfg *Config) (*Conn, error) {
	c := newConn(conn, true)
	c.identity = cfg.Identity
	hs := &clientHandshake{c: c, cfg: cfg, transcript: transcript{suite: pskSuite}}
	defer watchContext(ctx, conn)()
	if err := hs.handshake(); err != nil {
		return nil, c.abort(contextError(ctx, err), cfg.Identity)
	}
	return c, nil
}

type clientHandshake struct {
	c          *Conn
	cfg        *Config
	transcript transcript
	suites     []uint16
	groups     []uint16
	params     clientHelloParams
	priv       *ecdh.PrivateKey
	early      []byte
	hrr        *serverHello
	suite      *Suite
}

func (hs *clientHandshake) handshake() error {
	hs.suites = hs.cfg.suites()
	hs.groups = hs.cfg.groups()
	if len(hs.suites) == 0 || len(hs.groups) == 0 {
		return alertf(AlertInternalError, "the priority leaves no SHA-256 cipher suite or no supported group")
	}
	hs.early = earlySecret(pskSuite.Hash, hs.cfg.Key)
	if err := hs.sendClientHello(hs.groups[0], nil); err != nil {
		return err
	}
	sh, err := hs.readServerHello()
	if err != nil {
		return err
	}
	if sh.isHelloRetryRequest() {
		if err := hs.processHelloRetryRequest(sh); err != nil {
			return err
		}
		if sh, err = hs.readServerHello(); err != nil {
			return err
		}
		if sh.isHelloRetryRequest() {
			return alertf(AlertUnexpectedMessage, "server sent a second HelloRetryRequest")
		}
	}
	secrets, err := hs.processServerHello(sh)
	if err != nil {
		return err
	}
	return hs.readServerFlight(secrets)
}

// sendClientHello offers the PSK with one key share of group.
func (hs *clientHandshake) sendClientHello(group uint16, cookie []byte) error {
	rnd := hs.cfg.rand()
	priv, err := curveForGroup(group).GenerateKey(rnd)
	if err != nil {
		return alertf(AlertInternalError, "generate %s key: %v", GroupName(group), err)
	}
	hs.priv = priv
	if hs.params.random == nil {
		hs.params.random = make([]byte, 32)
		if _, err := rnd.Read(hs.params.random); err != nil {
			return alertf(AlertInternalError, "read random: %v", err)
		}
	}
	hs.params.cipherSuites = hs.suites
	hs.params.groups = hs.groups
	hs.params.keyShare = keyShare{group: group, data: priv.PublicKey().Bytes()}
	hs.params.cookie = cookie
	hs.params.identity = []byte(hs.cfg.Identity)
	hs.params.binderLen = pskSuite.HashLen
	ch := marshalClientHello(&hs.params)

	h := pskSuite.Hash
	truncated := ch[:len(ch)-pskSuite.HashLen-3]
	binder := finishedMAC(h, binderKey(h, hs.early, true), hs.transcript.sumWith(truncated))
	copy(ch[len(ch)-pskSuite.HashLen:], binder)
	hs.transcript.add(ch)

	if err := hs.c.out.appendRecords(recordTypeHandshake, ch); err != nil {
		return err
	}
	return hs.c.out.flush()
}

func (hs *clientHandshake) readServerHello() (*serverHello, error) {
	msg, err := hs.c.expectMessage(typeServerHello, "ServerHello")
	if err != nil {
		return nil, err
	}
	sh, err := parseServerHello(msg)
	if err != nil {
		return nil, err
	}
	if sh.supportedVersion == 0 {
		return nil, alertf(AlertProtocolVersion, "server does not support TLS 1.3")
	}
	if sh.supportedVersion != versionTLS13 {
		return nil, alertf(AlertIllegalParameter, "server selected version %#04x, which was not offered", sh.supportedVersion)
	}
	if !bytes.Equal(sh.sessionID, hs.params.sessionID) {
		return nil, alertf(AlertIllegalParameter, "server did not echo legacy_session_id")
	}
	if sh.compression != 0 {
		return nil, alertf(AlertIllegalParameter, "server selected compression")
	}
	if !slices.Contains(hs.suites, sh.cipherSuite) {
		return nil, alertf(AlertIllegalParameter, "server selected cipher suite %#04x, which was not offered", sh.cipherSuite)
	}
	if hs.hrr != nil && sh.cipherSuite != hs.hrr.cipherSuite {
		return nil, alertf(AlertIllegalParameter, "server changed the cipher suite after HelloRetryRequest")
	}
	hs.suite = SuiteByID(sh.cipherSuite)
	hs.c.suite = hs.suite
	return sh, nil
}

// processHelloRetryRequest replies to a HelloRetryRequest with a second
// ClientHello carrying a key share of the requested group.
func (hs *clientHandshake) processHelloRetryRequest(hrr *serverHello) error {
	if !hrr.hasKeyShare {
		// Only a key share or a cookie can make a PSK ClientHello
		// acceptable, and this client sends no other extension that a
		// HelloRetryRequest could ask to change.
		return alertf(AlertIllegalParameter, "HelloRetryRequest asks for no key share")
	}
	group := hrr.keyShare.group
	if !slices.Contains(hs.groups, group) || group == hs.params.keyShare.group {
		return alertf(AlertIllegalParameter, "HelloRetryRequest selects group %d, which was not offered or was already sent", group)
	}
	hs.hrr = hrr
	hs.c.helloRetried = true
	ch1 := hs.transcript.msgs
	hs.transcript.msgs = nil
	hs.transcript.add(messageHash(hs.suite.Hash, ch1), hrr.raw)
	return hs.sendClientHello(group, hrr.cookie)
}

// processServerHello checks the PSK and key share the server selected and
// derives the handshake secrets: client and server handshake traffic
// secrets and the handshake secret.
func (hs *clientHandshake) processServerHello(sh *serverHello) ([3][]byte, error) {
	var secrets [3][]byte
	if !sh.hasPreSharedKey {
		return secrets, alertf(AlertHandshakeFailure, "server did not accept the PSK and wants certificate authentication")
	}
	if sh.selectedIdentity != 0 {
		return secrets, alertf(AlertIllegalParameter, "server selected PSK identity %d of 1", sh.selectedIdentity)
	}
	if !sh.hasKeyShare {
		return secrets, alertf(AlertMissingExtension, "server sent no key share for psk_dhe_ke")
	}
	if sh.keyShare.group != hs.params.keyShare.group {
		return secrets, alertf(AlertIllegalParameter, "server key share is for group %d, not the offered %s",
			sh.keyShare.group, GroupName(hs.params.keyShare.group))
	}
	peer, err := hs.priv.Curve().NewPublicKey(sh.keyShare.data)
	if err != nil {
		return secrets, alertf(AlertIllegalParameter, "invalid %s key share from the server", GroupName(sh.keyShare.group))
	}
	shared, err := hs.priv.ECDH(peer)
	if err != nil {
		return secrets, alertf(AlertIllegalParameter, "invalid %s key share from the server", GroupName(sh.keyShare.group))
	}
	hs.c.group = sh.keyShare.group
	hs.transcript.add(sh.raw)

	h := hs.suite.Hash
	hsSecret := handshakeSecret(h, hs.early, shared)
	clientHS := deriveSecret(h, hsSecret, "c hs traffic", hs.transcript.sum())
	serverHS := deriveSecret(h, hsSecret, "s hs traffic", hs.transcript.sum())
	if err := hs.c.keysChangeOnRead(hs.suite, serverHS); err != nil {
		return secrets, err
	}
	if err := hs.c.keysChangeOnWrite(hs.suite, clientHS); err != nil {
		return secrets, err
	}
	return [3][]byte{clientHS, serverHS, hsSecret}, nil
}

// readServerFlight reads EncryptedExtensions and the server Finished,
// sends the client Finished and switches to the application secrets.
func (hs *clientHandshake) readServerFlight(secrets [3][]byte) error {
	clientHS, serverHS, hsSecret := secrets[0], secrets[1], secrets[2]
	h := hs.suite.Hash

	msg, err := hs.c.expectMessage(typeEncryptedExtensions, "EncryptedExtensions")
	if err != nil {
		return err
	}
	if err := parseEncryptedExtensions(msg); err != nil {
		return err
	}
	hs.transcript.add(msg)

	// With a PSK the server sends neither Certificate nor
	// CertificateRequest (RFC 8446 section 4.3.2), so Finished follows.
	msg, err = hs.c.expectMessage(typeFinished, "Finished")
	if err != nil {
		return err
	}
	want := finishedMAC(h, serverHS, hs.transcript.sum())
	if !hmac.Equal(msg[4:], want) {
		return alertf(AlertDecryptError, "server Finished does not verify")
	}
	hs.transcript.add(msg)

	master := masterSecret(h, hsSecret)
	clientAP := deriveSecret(h, master, "c ap traffic", hs.transcript.sum())
	serverAP := deriveSecret(h, master, "s ap traffic", hs.transcript.sum())
	if err := hs.c.keysChangeOnRead(hs.suite, serverAP); err != nil {
		return err
	}

	fin := marshalHandshake(typeFinished, finishedMAC(h, clientHS, hs.transcript.sum()))
	if err := hs.c.out.appendRecords(recordTypeHandshake, fin); err != nil {
		return err
	}
	if err := hs.c.out.flush(); err != nil {
		return err
	}
	if err := hs.c.keysChangeOnWrite(hs.suite, clientAP); err != nil {
		return err
	}
	return hs.c.finishHandshake()
}
