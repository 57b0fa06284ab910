package tlscreds

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/gonbd/gonbd/tlscreds/internal/tls13"
	"github.com/stretchr/testify/assert"
)

func TestPSKClientHint(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"UnknownIdentity", &tls13.AlertError{Alert: tls13.AlertUnknownPSKIdentity, Received: true}, `has no key for PSK user "alice"`},
		{"OtherKey", fmt.Errorf("handshake: %w", &tls13.AlertError{Alert: tls13.AlertDecryptError, Received: true}), `another key for PSK user "alice"`},
		{"ServerClosed", fmt.Errorf("tls: peer closed the connection during the handshake: %w", io.ErrUnexpectedEOF), "compare keys.psk on both ends"},
		{"SentNotReceived", &tls13.AlertError{Alert: tls13.AlertDecryptError, Reason: "bad finished"}, ""},
		{"OtherAlert", &tls13.AlertError{Alert: tls13.AlertHandshakeFailure, Received: true}, ""},
		{"Other", errors.New("connection refused"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := pskClientHint(tc.err, "alice")
			if tc.want == "" {
				assert.Empty(t, got)
				return
			}
			assert.Contains(t, got, tc.want)
		})
	}
}
