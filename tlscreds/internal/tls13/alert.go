package tls13

import "fmt"

// Alert is a TLS alert description (RFC 8446 section 6).
type Alert uint8

// Alert descriptions this package sends or names.
const (
	AlertCloseNotify           Alert = 0
	AlertUnexpectedMessage     Alert = 10
	AlertBadRecordMAC          Alert = 20
	AlertRecordOverflow        Alert = 22
	AlertHandshakeFailure      Alert = 40
	AlertIllegalParameter      Alert = 47
	AlertDecodeError           Alert = 50
	AlertDecryptError          Alert = 51
	AlertProtocolVersion       Alert = 70
	AlertInsufficientSecurity  Alert = 71
	AlertInternalError         Alert = 80
	AlertUserCanceled          Alert = 90
	AlertMissingExtension      Alert = 109
	AlertUnsupportedExtension  Alert = 110
	AlertUnknownPSKIdentity    Alert = 115
	AlertCertificateRequired   Alert = 116
	AlertNoApplicationProtocol Alert = 120
)

var alertNames = map[Alert]string{
	AlertCloseNotify:           "close_notify",
	AlertUnexpectedMessage:     "unexpected_message",
	AlertBadRecordMAC:          "bad_record_mac",
	AlertRecordOverflow:        "record_overflow",
	AlertHandshakeFailure:      "handshake_failure",
	AlertIllegalParameter:      "illegal_parameter",
	AlertDecodeError:           "decode_error",
	AlertDecryptError:          "decrypt_error",
	AlertProtocolVersion:       "protocol_version",
	AlertInsufficientSecurity:  "insufficient_security",
	AlertInternalError:         "internal_error",
	AlertUserCanceled:          "user_canceled",
	AlertMissingExtension:      "missing_extension",
	AlertUnsupportedExtension:  "unsupported_extension",
	AlertUnknownPSKIdentity:    "unknown_psk_identity",
	AlertCertificateRequired:   "certificate_required",
	AlertNoApplicationProtocol: "no_application_protocol",
}

func (a Alert) String() string {
	if s, ok := alertNames[a]; ok {
		return s
	}
	return fmt.Sprintf("alert(%d)", uint8(a))
}

// AlertError is a failure that ends the session, together with its alert.
// Received reports that the peer sent the alert. Otherwise this side
// detected the failure and sent the alert, if the connection still allowed
// writing.
type AlertError struct {
	Alert    Alert
	Received bool
	Reason   string
}

func (e *AlertError) Error() string {
	if e.Received {
		return fmt.Sprintf("tls: peer sent alert %s", e.Alert)
	}
	return fmt.Sprintf("tls: %s (sent alert %s)", e.Reason, e.Alert)
}

func alertf(a Alert, format string, args ...any) *AlertError {
	return &AlertError{Alert: a, Reason: fmt.Sprintf(format, args...)}
}
