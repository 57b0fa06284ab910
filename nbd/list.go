package nbd

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/hashicorp/go-hclog"
)

// WriteQemuList writes exports in the text format of qemu-nbd -L (checked
// against qemu-nbd 7.2): size and flags only for exports whose
// NBD_OPT_INFO succeeded, block sizes only when the server sent them.
func WriteQemuList(w io.Writer, exports []ExportInfo) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "exports available: %d\n", len(exports))
	for _, e := range exports {
		fmt.Fprintf(bw, " export: '%s'\n", e.Name)
		if e.Description != "" {
			fmt.Fprintf(bw, "  description: %s\n", e.Description)
		}
		if e.Flags&proto.FlagHasFlags != 0 {
			fmt.Fprintf(bw, "  size:  %d\n", e.Size)
			fmt.Fprintf(bw, "  flags: %#x (", uint16(e.Flags))
			for _, name := range e.Flags.Names() {
				fmt.Fprintf(bw, " %s", name)
			}
			fmt.Fprintf(bw, " )\n")
		}
		if e.MinBlock != 0 {
			fmt.Fprintf(bw, "  min block: %d\n", e.MinBlock)
			fmt.Fprintf(bw, "  opt block: %d\n", e.PreferredBlock)
			fmt.Fprintf(bw, "  max block: %d\n", e.MaxBlock)
		}
		if len(e.MetaContexts) > 0 {
			fmt.Fprintf(bw, "  available meta contexts: %d\n", len(e.MetaContexts))
			for _, mc := range e.MetaContexts {
				fmt.Fprintf(bw, "   %s\n", mc)
			}
		}
	}
	return bw.Flush()
}

// ListCommand implements qemu-nbd -L: it connects to the server at
// network ("tcp" or "unix") and address, with TLS when creds is not nil,
// lists the exports with their details and writes them to w in qemu-nbd's
// format. hostname is the name the server certificate must match; "" uses
// the host of a TCP address. Nothing is written unless the listing
// succeeds.
func ListCommand(ctx context.Context, w io.Writer, network, address string, creds tlscreds.Client, hostname string, logger hclog.Logger) error {
	opts := []DialOption{WithLogger(logger)}
	if creds != nil {
		opts = append(opts, WithTLS(creds))
	}
	if hostname != "" {
		opts = append(opts, WithTLSHostname(hostname))
	}
	n, err := NegotiateAddr(ctx, network, address, opts...)
	if err != nil {
		return err
	}
	defer n.Abort()

	exports, err := n.ListExports(ctx)
	if err != nil {
		return fmt.Errorf("list exports of %s: %w", address, err)
	}
	var out strings.Builder
	if err := WriteQemuList(&out, exports); err != nil {
		return err
	}
	_, err = io.WriteString(w, out.String())
	return err
}
