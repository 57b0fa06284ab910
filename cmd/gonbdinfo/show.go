package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/nbd/proto"
)

// contentProbeSize is the number of bytes at the start of the export passed to file(1), as nbdinfo does.
const contentProbeSize = 8192

// exportDetails is the information gonbdinfo prints for one export.
type exportDetails struct {
	info        nbd.ExportInfo
	contexts    []string
	hasContexts bool
	content     string
	uri         string
}

// doShow prints the connection and one export, or every export with
// --list.
func (i *info) doShow(ctx context.Context, u *nbd.URI) (int, error) {
	n, err := nbd.Negotiate(ctx, i.opts.uri, append(i.dialOpts, nbd.WithMetaContexts())...)
	if err != nil {
		return exitError, err
	}
	defer n.Abort()

	var entries []nbd.ExportEntry
	if i.opts.list {
		if entries, err = n.List(ctx); err != nil {
			return exitError, err
		}
	}

	i.printProtocol(n)
	ok := true
	if !i.opts.list {
		ok = i.showOne(ctx, n, u, n.ExportName(), "", true, true)
	} else {
		if len(entries) == 0 && i.opts.json {
			i.out.WriteString("\"exports\": []\n")
		}
		for k, e := range entries {
			conn := n
			if i.opts.probeContent() {
				// Reading the content ends the negotiation, so each
				// export gets its own connection.
				if conn, err = nbd.Negotiate(ctx, i.opts.uri, append(i.dialOpts, nbd.WithMetaContexts())...); err != nil {
					return exitError, err
				}
			}
			if !i.showOne(ctx, conn, u, e.Name, e.Description, k == 0, k == len(entries)-1) {
				ok = false
			}
			if conn != n {
				_ = conn.Abort()
			}
		}
	}
	if i.opts.json {
		i.out.WriteString("}\n")
	}
	if !ok {
		return exitError, nil
	}
	return exitOK, nil
}

// printProtocol prints the per-connection line, or opens the JSON object.
func (i *info) printProtocol(n *nbd.Negotiation) {
	packets := "simple"
	if n.StructuredReplies() {
		packets = "structured"
	}
	if !i.opts.json {
		with := "without"
		if n.TLS() {
			with = "with"
		}
		fmt.Fprintf(i.out, "protocol: %s %s TLS, using %s packets\n", n.Protocol(), with, packets)
		return
	}
	i.out.WriteString("{\n\"protocol\": ")
	writeJSONString(i.out, n.Protocol())
	fmt.Fprintf(i.out, ",\n\"TLS\": %s,\n", jsonBool(n.TLS()))
	fmt.Fprintf(i.out, "\"structured\": %s,\n", jsonBool(n.StructuredReplies()))
}

// showOne collects and prints one export. It reports failure on stderr
// and returns false, so --list goes on with the other exports.
func (i *info) showOne(ctx context.Context, n *nbd.Negotiation, u *nbd.URI, name, listDesc string, first, last bool) bool {
	d, err := i.collect(ctx, n, u, name)
	if err != nil {
		where := fmt.Sprintf(" for export: %s", name)
		if name == "" {
			where = " for the default export"
		}
		fmt.Fprintf(i.stderr, "gonbdinfo: %v%s\n", err, where)
		if !i.opts.list {
			fmt.Fprintln(i.stderr, "gonbdinfo: suggestion: to list all exports on the server, use --list")
		}
		return false
	}
	if listDesc != "" {
		d.info.Description = listDesc
	}
	if i.opts.json {
		i.printJSON(d, first, last)
	} else {
		i.printText(d)
	}
	return true
}

// collect queries one export with NBD_OPT_INFO (NBD_OPT_GO for servers
// without it), its meta contexts, and with content probing its first
// bytes.
func (i *info) collect(ctx context.Context, n *nbd.Negotiation, u *nbd.URI, name string) (*exportDetails, error) {
	d := &exportDetails{}
	var client *nbd.Client
	info, err := n.Info(ctx, name)
	if err != nil {
		if client, err = n.Go(ctx, name); err != nil {
			return nil, err
		}
		defer client.Close()
		info = &nbd.ExportInfo{}
		*info = client.Info()
	}
	d.info = *info
	if client == nil && n.StructuredReplies() {
		if d.contexts, err = n.ListMetaContexts(ctx, name); err == nil {
			d.hasContexts = true
		}
	}

	if i.opts.probeContent() {
		if client == nil {
			if client, err = n.Go(ctx, name); err != nil {
				return nil, err
			}
			defer client.Close()
		}
		d.content = probeContent(client)
	}
	d.uri = libnbdURI(u, n.TLS(), name)
	return d, nil
}

// probeContent runs file(1) on the first bytes of the export, as nbdinfo
// does. It is best effort: any failure gives "".
func probeContent(c *nbd.Client) string {
	filePath, err := exec.LookPath("file")
	if err != nil {
		return ""
	}
	size := min(c.Size(), contentProbeSize)
	buf := make([]byte, size)
	if size > 0 {
		if _, err := c.ReadAt(buf, 0); err != nil {
			return ""
		}
	}
	tmp, err := os.CreateTemp("", "gonbdinfo-")
	if err != nil {
		return ""
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(buf)
	if cerr := tmp.Close(); werr != nil || cerr != nil {
		return ""
	}
	out, err := exec.Command(filePath, "-b", tmp.Name()).Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return line
}

// libnbdURI rebuilds the URI for an export the way libnbd's nbd_get_uri
// does: nbds when TLS is in use, host and port as the URI gave them
// (port 10809 when absent), the export name as path, the user and the
// credential parameters.
//
// NOTE: libnbd 1.14 writes query values unescaped. This escapes the
// characters that would break the URI (space, '%', '&', '#', ';', '+'), so
// paths that contain them differ from nbdinfo's output.
func libnbdURI(u *nbd.URI, tls bool, export string) string {
	var b strings.Builder
	scheme := "nbd"
	if tls || u.RequiresTLS() {
		scheme = "nbds"
	}
	if u.IsUnix() {
		scheme += "+unix"
	}
	b.WriteString(scheme + "://")
	if u.Username != "" {
		b.WriteString(url.User(u.Username).String() + "@")
	}
	if !u.IsUnix() {
		b.WriteString(net.JoinHostPort(u.Host, strconv.Itoa(u.Port)))
	}
	b.WriteString((&url.URL{Path: "/" + export}).EscapedPath())

	var query []string
	add := func(key, value string) {
		if value != "" {
			query = append(query, key+"="+escapeQueryValue(value))
		}
	}
	add("socket", u.Socket)
	add("tls-certificates", u.TLSCertificates)
	add("tls-psk-file", u.TLSPSKFile)
	if len(query) > 0 {
		b.WriteString("?" + strings.Join(query, "&"))
	}
	return b.String()
}

func escapeQueryValue(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c == '%' || c == '&' || c == '#' || c == ';' || c == '+' || c >= 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// flagFields lists the boolean fields nbdinfo prints, in its order.
var flagFields = []struct {
	name string
	flag proto.TransmissionFlags
}{
	{"is_rotational", proto.FlagRotational},
	{"is_read_only", proto.FlagReadOnly},
	{"can_cache", proto.FlagSendCache},
	{"can_df", proto.FlagSendDF},
	{"can_fast_zero", proto.FlagSendFastZero},
	{"can_flush", proto.FlagSendFlush},
	{"can_fua", proto.FlagSendFUA},
	{"can_multi_conn", proto.FlagCanMultiConn},
	{"can_trim", proto.FlagSendTrim},
	{"can_zero", proto.FlagSendWriteZeroes},
}

func (i *info) printText(d *exportDetails) {
	w := i.out
	w.WriteString("export=")
	writeJSONString(w, d.info.Name)
	w.WriteString(":\n")
	if d.info.Description != "" {
		fmt.Fprintf(w, "\tdescription: %s\n", d.info.Description)
	}
	if human, ok := humanSize(uint64(d.info.Size)); ok {
		fmt.Fprintf(w, "\texport-size: %d (%s)\n", d.info.Size, human)
	} else {
		fmt.Fprintf(w, "\texport-size: %d\n", d.info.Size)
	}
	if d.content != "" {
		fmt.Fprintf(w, "\tcontent: %s\n", d.content)
	}
	fmt.Fprintf(w, "\turi: %s\n", d.uri)
	if d.hasContexts {
		w.WriteString("\tcontexts:\n")
		for _, c := range d.contexts {
			fmt.Fprintf(w, "\t\t%s\n", c)
		}
	}
	for _, f := range flagFields {
		fmt.Fprintf(w, "\t%s: %s\n", f.name, jsonBool(d.info.Flags&f.flag != 0))
	}
	for _, bs := range blockSizes(&d.info) {
		if bs.value > 0 {
			fmt.Fprintf(w, "\t%s: %d\n", bs.name, bs.value)
		}
	}
}

func (i *info) printJSON(d *exportDetails, first, last bool) {
	w := i.out
	if first {
		w.WriteString("\"exports\": [\n")
	}
	w.WriteString("\t{\n\t\"export-name\": ")
	writeJSONString(w, d.info.Name)
	w.WriteString(",\n")
	field := func(name, value string) {
		if value != "" {
			fmt.Fprintf(w, "\t%q: ", name)
			writeJSONString(w, value)
			w.WriteString(",\n")
		}
	}
	field("description", d.info.Description)
	field("content", d.content)
	field("uri", d.uri)
	if d.hasContexts {
		w.WriteString("\t\"contexts\": [\n")
		for k, c := range d.contexts {
			w.WriteString("\t\t")
			writeJSONString(w, c)
			if k+1 != len(d.contexts) {
				w.WriteString(",")
			}
			w.WriteString("\n")
		}
		w.WriteString("\t],\n")
	}
	for _, f := range flagFields {
		fmt.Fprintf(w, "\t%q: %s,\n", f.name, jsonBool(d.info.Flags&f.flag != 0))
	}
	for _, bs := range blockSizes(&d.info) {
		if bs.value > 0 {
			fmt.Fprintf(w, "\t%q: %d,\n", bs.name, bs.value)
		}
	}
	human, _ := humanSize(uint64(d.info.Size))
	fmt.Fprintf(w, "\t\"export-size\": %d,\n", d.info.Size)
	fmt.Fprintf(w, "\t\"export-size-str\": \"%s\"\n", human)
	if last {
		w.WriteString("\t} ]\n")
	} else {
		w.WriteString("\t},\n")
	}
}

type namedSize struct {
	name  string
	value uint32
}

func blockSizes(info *nbd.ExportInfo) []namedSize {
	return []namedSize{
		{"block_size_minimum", info.MinBlock},
		{"block_size_preferred", info.PreferredBlock},
		{"block_size_maximum", info.MaxBlock},
	}
}
