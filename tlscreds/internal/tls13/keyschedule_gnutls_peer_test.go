package tls13

// Known-answer tests of the whole psk_dhe_ke schedule, including the
// (EC)DHE handshake secret, from sessions between gonbd and the GnuTLS
// 3.7.9 tools. The GnuTLS-only recordings in keyschedule_gnutls_test.go
// cannot pin that part because the ephemeral private keys are unknown.
//
// record_gnutls_peer_test.go (build tag gnutlsrecord, run by
// testdata/record.sh) ran gonbd's handshake against gnutls-serv --echo or
// gnutls-cli on loopback. It set testing/cryptotest.SetGlobalRandom, so
// gonbd's random values and private keys follow from a seed. It wrote
// gonbd-NAME.records and the GnuTLS peer's key log gonbd-NAME.keylog.
// The test sets the same seed and replays the recorded GnuTLS side: the
// handshake completes only if gonbd derives the same handshake secrets as
// GnuTLS did, its application traffic secrets are the logged ones, and
// gonbd then writes the recorded bytes again.
//
// NOTE: the replay needs gonbd's ClientHello or ServerHello to be the
// recorded bytes. A deliberate change to their encoding, or a Go release
// that draws key generation randomness differently, fails these tests
// until record.sh records them again.

import (
	"context"
	"io"
	"testing"
	"testing/cryptotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gonbdPeerSession is a recorded session between gonbd and a GnuTLS tool.
type gonbdPeerSession struct {
	name string
	// client selects gonbd's role: client to gnutls-serv, or server to
	// gnutls-cli.
	client bool
	// seed is the cryptotest.SetGlobalRandom seed of gonbd's side.
	seed uint64
	// suites and groups are gonbd's Config.CipherSuites and Config.Groups.
	suites []uint16
	groups []uint16
	// peerPriority is the GnuTLS tool's --priority.
	peerPriority string
	// suite and group are what the handshake selected.
	suite uint16
	group uint16
	hrr   bool
}

const gnutlsPSKDHEPriority = "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+ECDHE-PSK"

var gonbdPeerSessions = []gonbdPeerSession{
	{
		name: "client-aes128gcm-x25519", client: true, seed: 1,
		suites: []uint16{TLSAES128GCMSHA256}, groups: []uint16{GroupX25519},
		peerPriority: gnutlsPSKDHEPriority,
		suite:        TLSAES128GCMSHA256, group: GroupX25519,
	},
	{
		// gonbd sends an X25519 key share first, and gnutls-serv accepts
		// only secp384r1.
		name: "client-chacha20-hrr", client: true, seed: 2,
		suites:       []uint16{TLSChaCha20Poly1305SHA256},
		peerPriority: gnutlsPSKDHEPriority + ":-GROUP-ALL:+GROUP-SECP384R1",
		suite:        TLSChaCha20Poly1305SHA256, group: GroupSecp384r1, hrr: true,
	},
	{
		name: "server-chacha20-secp256r1", seed: 3,
		groups:       []uint16{GroupSecp256r1},
		peerPriority: gnutlsPSKDHEPriority + ":-CIPHER-ALL:+CHACHA20-POLY1305",
		suite:        TLSChaCha20Poly1305SHA256, group: GroupSecp256r1,
	},
	{
		// gnutls-cli sends X25519 and secp256r1 key shares, and gonbd
		// accepts only secp384r1.
		name: "server-aes128gcm-hrr", seed: 4,
		groups: []uint16{GroupSecp384r1},
		peerPriority: gnutlsPSKDHEPriority +
			":-CIPHER-ALL:+AES-128-GCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1",
		suite: TLSAES128GCMSHA256, group: GroupSecp384r1, hrr: true,
	},
}

// config returns gonbd's Config of the session for the PSK of
// testdata/psk.txt.
func (ps *gonbdPeerSession) config(t *testing.T) *Config {
	identity, key := readRecordedPSK(t)
	cfg := &Config{CipherSuites: ps.suites, Groups: ps.groups}
	if ps.client {
		cfg.Identity, cfg.Key = identity, key
	} else {
		cfg.LookupKey = func(id string) []byte {
			if id == identity {
				return key
			}
			return nil
		}
	}
	return cfg
}

func TestKeyScheduleGnuTLSPeerReplay(t *testing.T) {
	for _, ps := range gonbdPeerSessions {
		t.Run(ps.name, func(t *testing.T) {
			s := loadGnuTLSSession(t, "gonbd-"+ps.name, ps.suite, ps.hrr)
			cryptotest.SetGlobalRandom(t, ps.seed)

			own, peer := s.client, s.server
			if !ps.client {
				own, peer = s.server, s.client
			}
			conn, written := replayConn(t, peer)
			ctx := context.Background()
			var c *Conn
			var err error
			if ps.client {
				c, err = ClientHandshake(ctx, conn, ps.config(t))
			} else {
				c, err = ServerHandshake(ctx, conn, ps.config(t))
			}
			if err != nil {
				sent := splitRecords(t, written())
				require.NotEmpty(t, sent, "gonbd sent nothing")
				require.Equal(t, own[0], sent[0],
					"gonbd's first handshake record differs from the recording; if that is intended, run testdata/record.sh")
				require.NoError(t, err)
			}
			assert.Equal(t, SuiteByID(ps.suite).Name, c.CipherSuite())
			assert.Equal(t, GroupName(ps.group), c.Group())
			assert.Equal(t, ps.hrr, c.HelloRetried())
			assert.Equal(t, s.identity, c.Identity())

			// The application traffic secrets gonbd switched to are the
			// ones the GnuTLS peer logged.
			clientAP, serverAP := c.out.cipher.secret, c.in.cipher.secret
			if !ps.client {
				clientAP, serverAP = serverAP, clientAP
			}
			assert.Equal(t, s.secret(t, "CLIENT_TRAFFIC_SECRET_0"), clientAP)
			assert.Equal(t, s.secret(t, "SERVER_TRAFFIC_SECRET_0"), serverAP)

			// The client sent one line and the server echoed it, so each
			// side reads the line once and then close_notify.
			buf := make([]byte, 2*len(gnutlsApplicationData))
			n, err := io.ReadFull(c, buf[:len(gnutlsApplicationData)])
			require.NoError(t, err)
			assert.Equal(t, gnutlsApplicationData, string(buf[:n]))
			if !ps.client {
				_, err = c.Read(buf)
				assert.ErrorIs(t, err, io.EOF, "close_notify after the line")
			}
			_, err = c.Write([]byte(gnutlsApplicationData))
			require.NoError(t, err)
			require.NoError(t, c.CloseWrite())
			assert.Equal(t, own, splitRecords(t, written()))
		})
	}
}
