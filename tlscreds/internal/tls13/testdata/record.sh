#!/bin/bash
# Re-records the external-PSK sessions that keyschedule_gnutls_test.go and
# keyschedule_gnutls_peer_test.go check.
#
# gnutls-NAME: each session runs gnutls-cli against gnutls-serv --echo on
# loopback through relay.go, which writes the TLS records of both directions
# to gnutls-NAME.records. The client's SSLKEYLOGFILE output becomes
# gnutls-NAME.keylog, and the exported keying material is gnutls-NAME.exporter.
#
# gonbd-NAME: go test -tags gnutlsrecord runs TestRecordGnuTLSPeerSessions
# (record_gnutls_peer_test.go), which connects gonbd's client to gnutls-serv
# and gnutls-cli to gonbd's server with seeded randomness and writes the
# records and the GnuTLS side's key log.
#
# Usage: cd tlscreds/internal/tls13/testdata && ./record.sh
# Needs gnutls-cli, gnutls-serv and go on PATH. psk.txt contains the test-only
# PSK in gnutls-serv --pskpasswd format and is reused, so that the vectors
# stay comparable; delete it to draw a new key.
set -euo pipefail
cd "$(dirname "$0")"

identity=gonbd-test
exporter_label=EXPORTER-gonbd-test
if [[ ! -f psk.txt ]]; then
	echo "$identity:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >psk.txt
fi
key=$(cut -d: -f2 psk.txt)
work=$(mktemp -d)
server_pid=
relay_pid=
cleanup() {
	[[ -n $relay_pid ]] && kill "$relay_pid" 2>/dev/null
	[[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

# wait_for FILE PATTERN waits up to 10 seconds for PATTERN to appear in FILE.
wait_for() {
	for _ in $(seq 100); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "record.sh: timed out waiting for '$2' in $1" >&2
	cat "$1" >&2
	return 1
}

# record NAME SERVER_PRIORITY CLIENT_PRIORITY
record() {
	local name=$1 server_priority=$2 client_priority=$3 port
	rm -f "$work"/*
	port=$((20000 + RANDOM % 20000))
	# NOTE: gnutls-serv 3.7.9 has no option to choose its listening address,
	# so it listens on every interface for the few seconds of one session.
	# Only the relay on 127.0.0.1 connects to it.
	SSLKEYLOGFILE=$work/server.keylog gnutls-serv --echo --nodb --pskpasswd psk.txt \
		--priority "$server_priority" --port "$port" >"$work/server.out" 2>&1 &
	server_pid=$!
	wait_for "$work/server.out" "listening on IPv4"

	go run relay.go -port-file "$work/relay.port" -target "127.0.0.1:$port" \
		-out "$work/records" 2>"$work/relay.err" &
	relay_pid=$!
	wait_for "$work/relay.port" .

	# The sleep keeps stdin open until the echo has come back.
	(printf 'gonbd known-answer test\n'; sleep 1) |
		SSLKEYLOGFILE=$work/client.keylog timeout 20 gnutls-cli \
			--priority "$client_priority" --pskusername "$identity" --pskkey "$key" \
			--keymatexport "$exporter_label" --keymatexportsize 32 \
			--port "$(cat "$work/relay.port")" 127.0.0.1 >"$work/client.out" 2>&1
	wait "$relay_pid"
	relay_pid=
	kill "$server_pid"
	wait "$server_pid" 2>/dev/null || true
	server_pid=

	if ! cmp -s "$work/client.keylog" "$work/server.keylog"; then
		echo "record.sh: $name: client and server key logs differ" >&2
		return 1
	fi
	grep -q '^S 17' "$work/records" || { echo "record.sh: $name: no protected records" >&2; return 1; }
	cp "$work/records" "gnutls-$name.records"
	cp "$work/client.keylog" "gnutls-$name.keylog"
	sed -n 's/^- Key material: //p' "$work/client.out" >"gnutls-$name.exporter"
	echo "recorded $name"
}

tls13='NORMAL:-VERS-ALL:+VERS-TLS1.3'
psk_dhe="$tls13:-KX-ALL:+ECDHE-PSK"
psk_only="$tls13:-KX-ALL:+PSK"
chacha='-CIPHER-ALL:+CHACHA20-POLY1305'
aes128='-CIPHER-ALL:+AES-128-GCM'
x25519='-GROUP-ALL:+GROUP-X25519'
p256='-GROUP-ALL:+GROUP-SECP256R1'

record psk-dhe-chacha20-x25519 "$psk_dhe" "$psk_dhe:$chacha:$x25519"
record psk-dhe-aes128gcm-x25519 "$psk_dhe" "$psk_dhe:$aes128:$x25519"
record psk-dhe-chacha20-secp256r1 "$psk_dhe" "$psk_dhe:$chacha:$p256"
record psk-dhe-aes128gcm-secp256r1 "$psk_dhe" "$psk_dhe:$aes128:$p256"
# The client sends key shares for its first two groups only, X25519 and
# secp256r1, but the server accepts only secp384r1, so the server sends a
# HelloRetryRequest.
record psk-dhe-aes128gcm-hrr "$psk_dhe:-GROUP-ALL:+GROUP-SECP384R1" \
	"$psk_dhe:$aes128:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1"
# psk_ke: no key share, so every secret follows from the PSK.
record psk-ke-aes128gcm "$psk_only" "$psk_only:$aes128"
record psk-ke-chacha20 "$psk_only" "$psk_only:$chacha"

(cd .. && go test -tags gnutlsrecord -run '^TestRecordGnuTLSPeerSessions$' -count=1 .)
echo "recorded gonbd sessions"

{ go version; gnutls-cli --version | head -1; gnutls-serv --version | head -1; } >versions.txt
