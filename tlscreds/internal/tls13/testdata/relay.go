//go:build ignore

// Relay forwards one TCP connection on loopback and writes every TLS record
// it forwards, one per line: "C <hex>" for client to server, "S <hex>" for server
// to client, in the order the relay read them. record.sh runs it between
// gnutls-cli and gnutls-serv.
//
//	go run relay.go -port-file FILE -target 127.0.0.1:PORT -out FILE
package main

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
	"time"
)

// timeout bounds the whole recording: one handshake, one line of
// application data and gnutls-cli's one-second wait for the echo.
const timeout = 30 * time.Second

func main() {
	portFile := flag.String("port-file", "", "file to write the relay's listening port to")
	target := flag.String("target", "", "loopback address of the server, host:port")
	out := flag.String("out", "", "file to write the records to")
	flag.Parse()
	if *portFile == "" || *target == "" || *out == "" {
		log.Fatal("relay: -port-file, -target and -out are required")
	}
	if err := run(*portFile, *target, *out); err != nil {
		log.Fatal("relay: ", err)
	}
}

func run(portFile, target, out string) error {
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return fmt.Errorf("parse -target %q: %w", target, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-target %q is not a loopback address", target)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	if err := os.WriteFile(portFile, []byte(fmt.Sprintf("%d\n", port)), 0o644); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	_ = ln.(*net.TCPListener).SetDeadline(deadline)
	client, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	defer client.Close()
	server, err := net.DialTimeout("tcp", target, timeout)
	if err != nil {
		return fmt.Errorf("dial %s: %w", target, err)
	}
	defer server.Close()
	_ = client.SetDeadline(deadline)
	_ = server.SetDeadline(deadline)

	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	w := &recordLog{w: f}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errs[0] = forward(w, "C", server, client) }()
	go func() { defer wg.Done(); errs[1] = forward(w, "S", client, server) }()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return f.Close()
}

// recordLog serializes the lines of both directions.
type recordLog struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *recordLog) record(dir string, rec []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := fmt.Fprintf(l.w, "%s %s\n", dir, hex.EncodeToString(rec))
	return err
}

// forward copies whole TLS records from src to dst and logs each one. At
// the end of src it half-closes dst, so that the other direction can
// finish.
func forward(l *recordLog, dir string, dst, src net.Conn) error {
	defer dst.(*net.TCPConn).CloseWrite()
	for {
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(src, hdr); err != nil {
			if err == io.EOF {
				return nil
			}
			// A read error between records, such as a reset when
			// a peer closes with unread data, ends this direction
			// and keeps the records read so far.
			log.Printf("relay: %s: read record header: %v", dir, err)
			return nil
		}
		rec := make([]byte, 5+int(binary.BigEndian.Uint16(hdr[3:])))
		copy(rec, hdr)
		if _, err := io.ReadFull(src, rec[5:]); err != nil {
			return fmt.Errorf("%s: read record body: %w", dir, err)
		}
		if err := l.record(dir, rec); err != nil {
			return err
		}
		if _, err := dst.Write(rec); err != nil {
			log.Printf("relay: %s: forward record: %v", dir, err)
			return nil
		}
	}
}
