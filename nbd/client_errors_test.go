package nbd

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCertificateAlertHint(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"CertificateRequired", errors.New("remote error: tls: certificate required"), "requires a client certificate"},
		{"BadCertificate", errors.New("remote error: tls: bad certificate"), "rejected this client's certificate"},
		{"UnknownCA", fmt.Errorf("read: %w", errors.New("remote error: tls: unknown certificate authority")), "rejected this client's certificate"},
		{"Revoked", errors.New("remote error: tls: revoked certificate"), "rejected this client's certificate"},
		{"LocalAlert", errors.New("tls: bad certificate"), ""},
		{"OtherAlert", errors.New("remote error: tls: handshake failure"), ""},
		{"EOF", errors.New("EOF"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := certificateAlertHint(tc.err)
			if tc.want == "" {
				assert.Empty(t, got)
				return
			}
			assert.Contains(t, got, tc.want)
		})
	}
}
