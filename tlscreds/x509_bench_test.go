package tlscreds

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/gonbd/gonbd/tlscreds/gen"
)

// BenchmarkX509ConnThroughput measures one-way throughput of an x509
// session over loopback TCP in 256 KiB writes, the size of a large NBD
// read reply.
func BenchmarkX509ConnThroughput(b *testing.B) {
	dir := b.TempDir()
	if err := gen.X509(gen.X509Options{Dir: dir, Hostnames: []string{"localhost"}}); err != nil {
		b.Fatal(err)
	}
	srv, err := LoadX509(X509Config{Dir: dir, Endpoint: EndpointServer, VerifyPeer: true})
	if err != nil {
		b.Fatal(err)
	}
	cli, err := LoadX509(X509Config{Dir: dir, Endpoint: EndpointClient, VerifyPeer: true})
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()

	done := make(chan error, 1)
	go func() {
		raw, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		c, err := srv.ServerHandshake(context.Background(), raw)
		if err != nil {
			raw.Close()
			done <- err
			return
		}
		_, err = io.Copy(io.Discard, c)
		c.Close()
		done <- err
	}()
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	client, err := cli.ClientHandshake(context.Background(), raw, "localhost")
	if err != nil {
		b.Fatal(err)
	}

	buf := make([]byte, 256<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := client.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	client.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.Logf("cipher suite %s", client.TLSInfo().CipherSuite)
}
