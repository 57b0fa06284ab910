package integration

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/stretchr/testify/require"
)

// Helpers for the robustness tests: a raw-socket NBD client that can
// break the protocol on purpose, /proc readings of the server process,
// and the TLS setups the hostile-client tests and the soak share.

// rawTimeout bounds every read and write of a raw test client, so a
// server that stops replying fails the test instead of hanging it.
const rawTimeout = 30 * time.Second

// rawClient is one hand-driven NBD connection.
type rawClient struct {
	t    *testing.T
	conn net.Conn
}

// dialRaw connects to the server and reads its greeting.
func dialRaw(t *testing.T, s *robustServer) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout(s.network, s.addr, rawTimeout)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn}
	c.readGreeting()
	return c
}

// dialRawFlags connects, reads the greeting and sends client flags.
func dialRawFlags(t *testing.T, s *robustServer, flags uint32) *rawClient {
	t.Helper()
	c := dialRaw(t, s)
	c.write(binary.BigEndian.AppendUint32(nil, flags))
	return c
}

func (c *rawClient) deadline() {
	require.NoError(c.t, c.conn.SetDeadline(time.Now().Add(rawTimeout)))
}

func (c *rawClient) readGreeting() {
	c.t.Helper()
	var b [18]byte
	c.readFull(b[:])
	require.Equal(c.t, proto.NBDMagic, binary.BigEndian.Uint64(b[0:8]), "greeting magic")
	require.Equal(c.t, proto.IHaveOpt, binary.BigEndian.Uint64(b[8:16]), "greeting IHAVEOPT")
}

func (c *rawClient) readFull(b []byte) {
	c.t.Helper()
	c.deadline()
	_, err := io.ReadFull(c.conn, b)
	require.NoError(c.t, err)
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	c.deadline()
	_, err := c.conn.Write(b)
	require.NoError(c.t, err)
}

// optionHeader returns an option header announcing length bytes of data.
func optionHeader(opt proto.Option, length uint32) []byte {
	return proto.OptionHeader{Option: opt, Length: length}.Encode(make([]byte, proto.OptionHeaderSize))
}

// optionBytes returns a complete option with its data.
func optionBytes(opt proto.Option, data []byte) []byte {
	return append(optionHeader(opt, uint32(len(data))), data...)
}

// goData returns the data of NBD_OPT_GO or NBD_OPT_INFO for name with no
// information requests.
func goData(name string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	return binary.BigEndian.AppendUint16(b, 0)
}

// sendOption sends a complete option.
func (c *rawClient) sendOption(opt proto.Option, data []byte) {
	c.t.Helper()
	c.write(optionBytes(opt, data))
}

// readOptionReply reads one option reply. Replies longer than 1 MiB fail
// the test rather than being read into memory.
func (c *rawClient) readOptionReply() (proto.OptionReplyHeader, []byte) {
	c.t.Helper()
	var hb [proto.OptionReplyHeaderSize]byte
	c.readFull(hb[:])
	h, err := proto.DecodeOptionReplyHeader(hb[:])
	require.NoError(c.t, err)
	require.LessOrEqual(c.t, h.Length, uint32(1<<20), "option reply length")
	data := make([]byte, h.Length)
	c.readFull(data)
	return h, data
}

// expectReply reads option replies until the final one (any but
// NBD_REP_INFO and NBD_REP_SERVER) and checks its type.
func (c *rawClient) expectReply(opt proto.Option, want proto.Reply) {
	c.t.Helper()
	for {
		h, _ := c.readOptionReply()
		require.Equal(c.t, opt, h.Option, "option in reply")
		if h.Reply == proto.RepInfo || h.Reply == proto.RepServer {
			continue
		}
		require.Equal(c.t, want, h.Reply, "reply to %s", opt)
		return
	}
}

// expectClosed reads until the server closes the connection. Bytes that
// arrive first (an alert, a reply) are allowed, but the connection must
// end within rawTimeout.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	c.deadline()
	_, err := io.Copy(io.Discard, io.LimitReader(c.conn, 64<<20))
	if isTimeout(err) {
		c.t.Fatalf("server did not close the connection within %s", rawTimeout)
	}
}

// goTransmission negotiates structured replies when asked and enters
// transmission on the default export with NBD_OPT_GO.
func (c *rawClient) goTransmission(structured bool) {
	c.t.Helper()
	if structured {
		c.sendOption(proto.OptStructuredReply, nil)
		c.expectReply(proto.OptStructuredReply, proto.RepAck)
	}
	c.sendOption(proto.OptGo, goData(""))
	c.expectReply(proto.OptGo, proto.RepAck)
}

// sendRequest sends one request header and its write data.
func (c *rawClient) sendRequest(cmd proto.Command, flags proto.CommandFlags, cookie, offset uint64, length uint32, data []byte) {
	c.t.Helper()
	r := proto.Request{Flags: flags, Command: cmd, Cookie: cookie, Offset: offset, Length: length}
	c.write(append(r.Encode(make([]byte, proto.RequestHeaderSize)), data...))
}

// rawReply is a reply as the raw client decoded it.
type rawReply struct {
	cookie uint64
	errno  proto.Errno
	data   []byte // read data of a simple reply (when readLen was given)
}

// readSimpleReply reads a simple reply and readLen bytes of data when it
// succeeded.
func (c *rawClient) readSimpleReply(readLen int) rawReply {
	c.t.Helper()
	var b [proto.SimpleReplyHeaderSize]byte
	c.readFull(b[:])
	require.Equal(c.t, proto.SimpleReplyMagic, binary.BigEndian.Uint32(b[0:4]), "simple reply magic")
	r := rawReply{errno: proto.Errno(binary.BigEndian.Uint32(b[4:8])), cookie: binary.BigEndian.Uint64(b[8:16])}
	if r.errno == 0 && readLen > 0 {
		r.data = make([]byte, readLen)
		c.readFull(r.data)
	}
	return r
}

// readStructuredReply reads chunks until one has NBD_REPLY_FLAG_DONE and
// returns the cookie and the errno of the last error chunk.
func (c *rawClient) readStructuredReply() rawReply {
	c.t.Helper()
	var r rawReply
	for {
		var b [proto.StructuredReplyHeaderSize]byte
		c.readFull(b[:])
		require.Equal(c.t, proto.StructuredReplyMagic, binary.BigEndian.Uint32(b[0:4]), "structured reply magic")
		h, err := proto.DecodeChunkHeader(b[4:])
		require.NoError(c.t, err)
		require.LessOrEqual(c.t, h.Length, uint32(proto.MaxPayloadSize+8), "chunk length")
		payload := make([]byte, h.Length)
		c.readFull(payload)
		r.cookie = h.Cookie
		if h.Type == proto.ReplyTypeError && len(payload) >= 4 {
			r.errno = proto.Errno(binary.BigEndian.Uint32(payload[0:4]))
		}
		if h.Flags&proto.ReplyFlagDone != 0 {
			return r
		}
	}
}

// procStats is one reading of a process's memory, threads and open files.
type procStats struct {
	rssKiB  int64 // VmRSS
	hwmKiB  int64 // VmHWM, the peak resident set size
	threads int
	fds     int
}

func (s procStats) String() string {
	return fmt.Sprintf("VmRSS %d KiB, VmHWM %d KiB, %d threads, %d open fds", s.rssKiB, s.hwmKiB, s.threads, s.fds)
}

// readProcStats reads /proc/PID/status and counts /proc/PID/fd.
func readProcStats(t *testing.T, pid int) procStats {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	var s procStats
	for _, line := range strings.Split(string(status), "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch key {
		case "VmRSS":
			s.rssKiB = n
		case "VmHWM":
			s.hwmKiB = n
		case "Threads":
			s.threads = int(n)
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	s.fds = len(fds)
	return s
}

// waitFDs waits until the process has at most want open files, which
// happens a moment after clients disconnect, and returns the last
// reading. The caller asserts on it.
func waitFDs(t *testing.T, pid, want int) procStats {
	t.Helper()
	deadline := time.Now().Add(rawTimeout)
	for {
		s := readProcStats(t, pid)
		if s.fds <= want || time.Now().After(deadline) {
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// memoryBoundKiB returns kib, or ten times kib when GONBD_RACE=1 marks
// binaries built with -race. Go's race detector documentation puts its
// memory overhead at 5 to 10 times.
func memoryBoundKiB(kib int64) int64 {
	if os.Getenv("GONBD_RACE") == "1" {
		return 10 * kib
	}
	return kib
}

// settledStats waits until the fd count is the same in two readings
// 100 ms apart, up to five seconds, and returns the last reading. It is
// the baseline before a test, taken once connections that were just
// closed (such as the readiness probe) are gone.
func settledStats(t *testing.T, pid int) procStats {
	t.Helper()
	last := readProcStats(t, pid)
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		s := readProcStats(t, pid)
		if s.fds == last.fds {
			return s
		}
		last = s
	}
	return last
}

// robustServer is a gonbd process started by a robustness test.
type robustServer struct {
	*proc
	pid     int
	network string // "tcp" or "unix"
	addr    string
	tls     tlscreds.Client // nil without TLS
	// readOnly makes checkServes read without writing.
	readOnly bool
}

// startRobustServer starts gonbd on loopback TCP with args (flags and
// IMAGE) and waits until it accepts connections.
func startRobustServer(t *testing.T, args ...string) *robustServer {
	t.Helper()
	s := serveTCP(t, args...)
	addr := strings.TrimSuffix(strings.TrimPrefix(s.uri, "nbd://"), "/")
	t.Cleanup(func() {
		// A gonbd built with -race (scripts/robustness does) reports
		// data races on stderr while it runs.
		if strings.Contains(s.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("gonbd reported a data race:\n%s", s.stderr.String())
		}
	})
	return &robustServer{proc: s.proc, pid: s.cmd.Process.Pid, network: "tcp", addr: addr}
}

// dial connects gonbd's client to the default export, with TLS when the
// server has it.
func (s *robustServer) dial(t *testing.T) *nbd.Client {
	t.Helper()
	c, err := s.tryDial()
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func (s *robustServer) tryDial() (*nbd.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rawTimeout)
	defer cancel()
	var opts []nbd.DialOption
	if s.tls != nil {
		opts = append(opts, nbd.WithTLS(s.tls), nbd.WithTLSHostname("localhost"))
	}
	return nbd.DialAddr(ctx, s.network, s.addr, opts...)
}

// checkServes writes a pattern through c at off and reads it back, or
// only reads on a read-only server: the proof that a well-behaved client
// still gets service.
func (s *robustServer) checkServes(t *testing.T, c *nbd.Client, off int64, seed byte) {
	t.Helper()
	if s.readOnly {
		_, err := c.ReadAt(make([]byte, 64<<10), off)
		require.NoError(t, err, "well-behaved client read")
		return
	}
	checkServes(t, c, off, seed)
}

// checkServes writes a pattern through c at off and reads it back.
func checkServes(t *testing.T, c *nbd.Client, off int64, seed byte) {
	t.Helper()
	want := make([]byte, 64<<10)
	for i := range want {
		want[i] = seed + byte(i*7)
	}
	_, err := c.WriteAt(want, off)
	require.NoError(t, err, "well-behaved client write")
	got := make([]byte, len(want))
	_, err = c.ReadAt(got, off)
	require.NoError(t, err, "well-behaved client read")
	require.Equal(t, want, got, "well-behaved client data")
}

// tlsSetup is a TLS configuration for gonbd: the --object and
// --tls-creds arguments and matching client credentials.
type tlsSetup struct {
	name   string
	args   []string
	client tlscreds.Client
	server tlscreds.Server // the same credentials, for in-process servers
}

// x509Setup creates x509 credentials with gonbd-creds.
func x509Setup(t *testing.T) tlsSetup {
	t.Helper()
	dir := gonbdCredsX509(t)
	client, err := tlscreds.LoadX509(tlscreds.X509Config{Dir: dir, Endpoint: tlscreds.EndpointClient, VerifyPeer: true})
	require.NoError(t, err)
	server, err := tlscreds.LoadX509(tlscreds.X509Config{Dir: dir, Endpoint: tlscreds.EndpointServer, VerifyPeer: true})
	require.NoError(t, err)
	return tlsSetup{
		name:   "X509",
		args:   []string{"--object", "tls-creds-x509,id=tls0,endpoint=server,dir=" + dir, "--tls-creds", "tls0"},
		client: client,
		server: server,
	}
}

// pskSetup creates a keys.psk for alice with gonbd-creds.
func pskSetup(t *testing.T) tlsSetup {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "psk")
	mustRun(t, bin(t, "gonbd-creds"), "psk", "--dir", dir, "--username", "alice")
	client, err := tlscreds.LoadPSK(tlscreds.PSKConfig{Dir: dir, Endpoint: tlscreds.EndpointClient, Username: "alice"})
	require.NoError(t, err)
	server, err := tlscreds.LoadPSK(tlscreds.PSKConfig{Dir: dir, Endpoint: tlscreds.EndpointServer})
	require.NoError(t, err)
	return tlsSetup{
		name:   "PSK",
		args:   []string{"--object", "tls-creds-psk,id=tls0,endpoint=server,dir=" + dir, "--tls-creds", "tls0"},
		client: client,
		server: server,
	}
}

// startTLSServer starts gonbd with the TLS setup and args.
func startTLSServer(t *testing.T, setup tlsSetup, args ...string) *robustServer {
	t.Helper()
	s := startRobustServer(t, append(append([]string{}, setup.args...), args...)...)
	s.tls = setup.client
	return s
}

// isTimeout reports whether err is a deadline expiring.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
