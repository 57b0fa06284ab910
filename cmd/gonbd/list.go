package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/gonbd/gonbd/nbd"
	"github.com/hashicorp/go-hclog"
)

// listTimeout bounds a whole -L run, connection and negotiation included.
const listTimeout = 60 * time.Second

// listRemoteExports runs -L: it connects to the server named by -b/-p or
// -k and prints its exports as qemu-nbd -L does.
func listRemoteExports(o *options, stdout, stderr io.Writer) int {
	log := hclog.New(&hclog.LoggerOptions{Name: "gonbd", Level: hclog.Warn, Output: stderr})
	if o.verbose {
		log.SetLevel(hclog.Debug)
	}

	creds, err := clientCreds(o, log)
	if err != nil {
		fmt.Fprintf(stderr, "gonbd: %v\n", err)
		return 1
	}

	network, address, host := "tcp", "", listHost(o)
	if o.socket != "" {
		network, address = "unix", o.socket
	} else {
		address = net.JoinHostPort(host, strconv.Itoa(o.port))
	}
	hostname := o.tlsHostname
	if hostname == "" {
		hostname = host
	}

	ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
	defer cancel()
	if err := nbd.ListCommand(ctx, stdout, network, address, creds, hostname, log); err != nil {
		fmt.Fprintf(stderr, "gonbd: %v\n", err)
		return 1
	}
	return 0
}

// listHost is the host -L connects to: -b, or localhost for the default
// 0.0.0.0. qemu-nbd 7.2 -L connects to 0.0.0.0 itself and checks an x509
// server certificate against the name "0.0.0.0", which fails for any
// certificate issued to localhost, so gonbd does not copy that.
func listHost(o *options) string {
	if o.bind == "" || o.bind == "0.0.0.0" {
		return "localhost"
	}
	return trimBrackets(o.bind)
}
