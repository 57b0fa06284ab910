package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/gonbd/gonbd/internal/credobj"
	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/object"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/hashicorp/go-hclog"
)

// listTimeout bounds a whole -L session.
const listTimeout = time.Minute

// listExports runs -L: it lists another server's exports in qemu-nbd's
// format. The server is at -k, or at -b (default localhost) and -p.
func listExports(o *options, stdout, stderr io.Writer) int {
	log := hclog.New(&hclog.LoggerOptions{Name: "gonbd", Level: hclog.Warn, Output: stderr})
	if o.verbose {
		log.SetLevel(hclog.Debug)
	}

	network, address := "unix", o.socket
	if o.socket == "" {
		host := trimBrackets(o.bind)
		if !o.addrSet || host == "0.0.0.0" {
			host = "localhost"
		}
		network, address = "tcp", net.JoinHostPort(host, strconv.Itoa(o.port))
	}

	var creds tlscreds.Client
	if o.tlsCreds != "" {
		reg, err := object.ParseAll(o.objects)
		if err != nil {
			fmt.Fprintf(stderr, "gonbd: %v\n", err)
			return 1
		}
		c, err := credobj.Load(reg, o.tlsCreds, tlscreds.EndpointClient, log)
		if err != nil {
			fmt.Fprintf(stderr, "gonbd: %v\n", err)
			return 1
		}
		creds = c
	}

	ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
	defer cancel()
	if err := nbd.ListCommand(ctx, stdout, network, address, creds, o.tlsHostname, log); err != nil {
		fmt.Fprintf(stderr, "gonbd: -L %s: %v\n", address, err)
		return 1
	}
	return 0
}
