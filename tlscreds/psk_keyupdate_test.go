package tlscreds

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPSKKeyUpdateOpenssl has openssl s_client request a KeyUpdate (its
// "k" command), to which the server replies with its own. Then the server
// requests one. Data flows both ways after each update.
func TestPSKKeyUpdateOpenssl(t *testing.T) {
	openssl := needTool(t, "openssl")
	f := newPSKFixture(t, "alice")
	psk := loadTestPSK(t, f, EndpointServer, Priority{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()

	// Without -quiet, s_client treats a stdin read that starts with "k" as
	// a command to send KeyUpdate with update_requested.
	peer := startPeer(t, openssl, "s_client", "-connect", l.Addr().String(),
		"-psk_identity", f.user, "-psk", f.hexKey, "-tls1_3")
	raw, err := l.Accept()
	require.NoError(t, err)
	defer raw.Close()
	c, err := psk.ServerHandshake(t.Context(), raw)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))

	exchange := func(step string) {
		t.Helper()
		request := testPayload("client-"+step, 20000)
		_, err := peer.stdin.Write(request)
		require.NoError(t, err)
		got := make([]byte, len(request))
		_, err = io.ReadFull(c, got)
		require.NoError(t, err, step)
		assert.Equal(t, request, got, step)
		reply := testPayload("server-"+step, 20000)
		_, err = c.Write(reply)
		require.NoError(t, err)
		peer.waitOutput(t, string(reply[len(reply)-100:]))
	}

	exchange("before")
	_, err = peer.stdin.Write([]byte("k\n"))
	require.NoError(t, err)
	peer.waitOutput(t, "KEYUPDATE")
	exchange("after-client-update")

	require.NoError(t, c.(pskConn).UpdateKeys(true))
	exchange("after-server-update")
}
