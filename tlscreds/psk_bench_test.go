package tlscreds

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gonbd/gonbd/tlscreds/internal/tls13"
	"github.com/stretchr/testify/require"
)

// pskConnPair returns both ends of a PSK session over loopback TCP.
func pskConnPair(b *testing.B, pr Priority) (client, server Conn) {
	b.Helper()
	f := newPSKFixture(b, "alice")
	serverPSK := loadTestPSK(b, f, EndpointServer, pr)
	clientPSK := loadTestPSK(b, f, EndpointClient, pr)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan Conn, 1)
	go func() {
		raw, err := l.Accept()
		if err != nil {
			done <- nil
			return
		}
		c, err := serverPSK.ServerHandshake(ctx, raw)
		if err != nil {
			raw.Close()
		}
		done <- c
	}()
	raw, err := net.Dial("tcp", l.Addr().String())
	require.NoError(b, err)
	client, err = clientPSK.ClientHandshake(ctx, raw, "")
	require.NoError(b, err)
	server = <-done
	require.NotNil(b, server)
	b.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// BenchmarkPSKConnThroughput measures one-way throughput of a PSK session
// over loopback TCP with 1 MiB writes, the size of a large NBD read reply.
func BenchmarkPSKConnThroughput(b *testing.B) {
	cases := []struct {
		name  string
		suite uint16
	}{
		{"AES128GCM", tls13.TLSAES128GCMSHA256},
		{"ChaCha20Poly1305", tls13.TLSChaCha20Poly1305SHA256},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			client, server := pskConnPair(b, Priority{CipherSuites: []uint16{tc.suite}})
			const chunk = 1 << 20
			buf := make([]byte, chunk)
			total := int64(b.N) * chunk
			drained := make(chan error, 1)
			go func() {
				_, err := io.CopyN(io.Discard, client, total)
				drained <- err
			}()
			b.SetBytes(chunk)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := server.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			require.NoError(b, <-drained)
		})
	}
}
