package nbd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gonbd/gonbd/export"
	_ "github.com/gonbd/gonbd/export/file" // registers the "file" and "raw" drivers
	"github.com/gonbd/gonbd/export/memory"
	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/gonbd/gonbd/tlscreds/gen"
)

// Serve a raw image file, as qemu-nbd -f raw IMAGE does, and read it back
// with the client.
func ExampleServer_Serve_file() {
	dir, err := os.MkdirTemp("", "gonbd-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	image := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(image, []byte("hello from a file"), 0o600); err != nil {
		log.Fatal(err)
	}
	if err := os.Truncate(image, 1<<20); err != nil {
		log.Fatal(err)
	}

	backend, err := export.Open("file", export.Options{"filename": image})
	if err != nil {
		log.Fatal(err)
	}
	defer backend.(io.Closer).Close()
	srv, err := nbd.NewServer(nbd.ServerConfig{
		Exports:    []*nbd.Export{{Name: "disk", Backend: backend}},
		Persistent: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), l) }()

	ctx := context.Background()
	c, err := nbd.Dial(ctx, "nbd://"+l.Addr().String()+"/disk")
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 17)
	if _, err := c.ReadAt(buf, 0); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("size %d: %s\n", c.Size(), buf)
	c.Close()

	shutdown(srv, served)
	// Output: size 1048576: hello from a file
}

// Require TLS with a pre-shared key, as qemu-nbd --object
// tls-creds-psk,id=tls0,dir=DIR,endpoint=server --tls-creds tls0 does. The
// client names the keys file and its user in the URI, as libnbd does.
func ExampleServer_Serve_psk() {
	dir, err := os.MkdirTemp("", "gonbd-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if _, err := gen.PSK(dir, "alice", false); err != nil {
		log.Fatal(err)
	}
	creds, err := tlscreds.LoadPSK(tlscreds.PSKConfig{Dir: dir, Endpoint: tlscreds.EndpointServer})
	if err != nil {
		log.Fatal(err)
	}

	srv, err := nbd.NewServer(nbd.ServerConfig{
		Exports:    []*nbd.Export{{Name: "", Backend: memory.New(1<<20, false)}},
		TLS:        creds,
		TLSMode:    nbd.TLSRequire,
		Persistent: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), l) }()

	ctx := context.Background()
	_, err = nbd.Dial(ctx, "nbd://"+l.Addr().String()+"/")
	fmt.Println("plaintext client rejected:", err != nil)

	keys := filepath.Join(dir, tlscreds.PSKKeysFileName)
	c, err := nbd.Dial(ctx, "nbds://alice@"+l.Addr().String()+"/?tls-psk-file="+keys)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("TLS:", c.TLS(), "size:", c.Size())
	c.Close()

	shutdown(srv, served)
	// Output:
	// plaintext client rejected: true
	// TLS: true size: 1048576
}

// Require TLS with certificates, as qemu-nbd --object
// tls-creds-x509,id=tls0,dir=DIR,endpoint=server --tls-creds tls0 does.
// gen.X509 writes a CA, a server and a client certificate to one
// directory, which serves both ends here.
func ExampleServer_Serve_x509() {
	dir, err := os.MkdirTemp("", "gonbd-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	err = gen.X509(gen.X509Options{
		Dir:       dir,
		Hostnames: []string{"localhost"},
		IPs:       []net.IP{net.IPv4(127, 0, 0, 1)},
	})
	if err != nil {
		log.Fatal(err)
	}
	creds, err := tlscreds.LoadX509(tlscreds.X509Config{
		Dir:         dir,
		Endpoint:    tlscreds.EndpointServer,
		VerifyPeer:  true, // require a client certificate issued by the CA
		SanityCheck: true,
	})
	if err != nil {
		log.Fatal(err)
	}

	srv, err := nbd.NewServer(nbd.ServerConfig{
		Exports:    []*nbd.Export{{Name: "", Backend: memory.New(1<<20, false)}},
		TLS:        creds,
		TLSMode:    nbd.TLSRequire,
		Persistent: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), l) }()

	ctx := context.Background()
	c, err := nbd.Dial(ctx, "nbds://"+l.Addr().String()+"/?tls-certificates="+dir)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.WriteAt([]byte("signed"), 0); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := c.ReadAt(buf, 0); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("TLS: %v, read %q\n", c.TLS(), buf)
	c.Close()

	shutdown(srv, served)
	// Output: TLS: true, read "signed"
}

// Write, read, flush, zero and query block status through the client.
func ExampleDial() {
	srv, err := nbd.NewServer(nbd.ServerConfig{
		Exports:    []*nbd.Export{{Name: "scratch", Backend: memory.New(4<<20, false)}},
		Persistent: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), l) }()

	ctx := context.Background()
	c, err := nbd.Dial(ctx, "nbd://"+l.Addr().String()+"/scratch")
	if err != nil {
		log.Fatal(err)
	}

	data := []byte(strings.Repeat("x", 64<<10))
	if _, err := c.WriteAt(data, 1<<20); err != nil {
		log.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := c.ReadAt(buf, 1<<20); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("export %q, %d bytes, read %q\n", c.Info().Name, c.Size(), buf)

	// The memory export allocates 64 KiB pages, so block status shows
	// one page of data between holes.
	extents, err := c.BlockStatus(0, 4<<20, proto.ContextBaseAllocation)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range extents {
		kind := "data"
		if e.Flags&proto.StateHole != 0 {
			kind = "hole"
		}
		fmt.Printf("%d+%d %s\n", e.Offset, e.Length, kind)
	}

	if err := c.Zero(1<<20, 64<<10); err != nil {
		log.Fatal(err)
	}
	if _, err := c.ReadAt(buf, 1<<20); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("after write zeroes: %q\n", buf)

	c.Close()
	shutdown(srv, served)
	// Output:
	// export "scratch", 4194304 bytes, read "xxxx"
	// 0+1048576 hole
	// 1048576+65536 data
	// 1114112+3080192 hole
	// after write zeroes: "\x00\x00\x00\x00"
}

// shutdown stops srv and waits for its Serve call to return.
func shutdown(srv *nbd.Server, served <-chan error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	if err := <-served; !errors.Is(err, nbd.ErrServerClosed) {
		log.Fatal(err)
	}
}
