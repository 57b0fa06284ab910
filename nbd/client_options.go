package nbd

import (
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/hashicorp/go-hclog"
)

// DialOption configures Dial, Negotiate and NegotiateAddr.
type DialOption func(*clientConfig)

// clientConfig collects the dial options.
type clientConfig struct {
	tls         tlscreds.Client
	tlsMode     TLSMode
	tlsModeSet  bool
	tlsHostname string
	exportName  *string
	metaContext []string
	noStructure bool
	maxInFlight int
	logger      hclog.Logger
	// uriCredentials builds credentials from an NBD URI's TLS parameters.
	uriCredentials URICredentialsLoader
}

// defaultMaxInFlight bounds the requests a Client has on the wire at once.
// qemu-nbd serves 16 requests per client in parallel and queues the rest,
// so a few times that keeps every server busy without unbounded memory.
const defaultMaxInFlight = 64

func newClientConfig(opts []DialOption) *clientConfig {
	cfg := &clientConfig{
		metaContext:    []string{proto.ContextBaseAllocation},
		maxInFlight:    defaultMaxInFlight,
		uriCredentials: LoadURICredentials,
	}
	for _, o := range opts {
		o(cfg)
	}
	if cfg.logger == nil {
		cfg.logger = hclog.NewNullLogger()
	}
	if cfg.tls != nil && !cfg.tlsModeSet {
		cfg.tlsMode = TLSRequire
	}
	return cfg
}

// WithTLS makes the client upgrade the connection with NBD_OPT_STARTTLS
// using creds. TLS is required unless WithTLSMode sets another mode.
func WithTLS(creds tlscreds.Client) DialOption {
	return func(c *clientConfig) { c.tls = creds }
}

// WithTLSMode sets whether TLS is required (the default with credentials,
// and qemu's behaviour) or optional (TLSOptional: a server that replies to
// STARTTLS with NBD_REP_ERR_POLICY or NBD_REP_ERR_UNSUP is used in
// plaintext). TLSOff disables TLS even if credentials are set.
func WithTLSMode(mode TLSMode) DialOption {
	return func(c *clientConfig) { c.tlsMode, c.tlsModeSet = mode, true }
}

// WithTLSHostname sets the name the server certificate must match. The
// default is the host of the address dialled.
func WithTLSHostname(name string) DialOption {
	return func(c *clientConfig) { c.tlsHostname = name }
}

// WithExportName overrides the export name of the URI.
func WithExportName(name string) DialOption {
	return func(c *clientConfig) { c.exportName = &name }
}

// WithMetaContexts sets the meta contexts to request with
// NBD_OPT_SET_META_CONTEXT (default base:allocation). No names means none.
func WithMetaContexts(names ...string) DialOption {
	return func(c *clientConfig) { c.metaContext = append([]string(nil), names...) }
}

// WithoutStructuredReplies skips NBD_OPT_STRUCTURED_REPLY, as an old
// client would; block status is then unavailable.
func WithoutStructuredReplies() DialOption {
	return func(c *clientConfig) { c.noStructure = true }
}

// WithMaxInFlight bounds the requests on the wire at once (default 64).
func WithMaxInFlight(n int) DialOption {
	return func(c *clientConfig) {
		if n > 0 {
			c.maxInFlight = n
		}
	}
}

// WithLogger sets the logger (default: none).
func WithLogger(l hclog.Logger) DialOption {
	return func(c *clientConfig) { c.logger = l }
}

// WithURICredentials sets how Dial and Negotiate turn an NBD URI's
// tls-certificates, tls-psk-file, user and tls-verify-peer into
// credentials. The default is LoadURICredentials.
func WithURICredentials(load URICredentialsLoader) DialOption {
	return func(c *clientConfig) { c.uriCredentials = load }
}
