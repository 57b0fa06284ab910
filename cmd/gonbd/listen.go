package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

// listenFDsStart is the first file descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// listen returns the server's listener: a socket passed by systemd
// (LISTEN_FDS and LISTEN_PID), a Unix socket (-k) or TCP (-b, -p).
func listen(o *options) (net.Listener, error) {
	if l, ok, err := systemdListener(o); ok || err != nil {
		return l, err
	}
	if o.socket != "" {
		return listenUnix(o.socket)
	}

	host := trimBrackets(o.bind)
	addr := net.JoinHostPort(host, strconv.Itoa(o.port))
	l, err := net.Listen(tcpNetwork(host), addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, usageErrorf("listen on %s: address already in use: stop the other server or pick another port with -p", addr)
	}
	if err != nil {
		return nil, usageErrorf("listen on %s: %v: check -b and -p", addr, unwrapAll(err))
	}
	return l, nil
}

// tcpNetwork returns "tcp4" for an IPv4 address and "tcp" otherwise. Go
// listens on a dual-stack [::] socket for "tcp" and 0.0.0.0, which would
// also accept IPv6 clients. qemu-nbd 7.2 binds 0.0.0.0 to IPv4 only, and
// firewall rules written for it expect that.
func tcpNetwork(host string) string {
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		return "tcp4"
	}
	return "tcp"
}

func trimBrackets(host string) string {
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		return host[1 : len(host)-1]
	}
	return host
}

// systemdListener returns the first socket systemd passed to this process,
// if any. It unsets LISTEN_FDS and LISTEN_PID so a child does not take them.
func systemdListener(o *options) (net.Listener, bool, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || fds == "" || pid != strconv.Itoa(os.Getpid()) {
		return nil, false, nil
	}
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")

	n, err := strconv.Atoi(fds)
	if err != nil || n < 1 {
		return nil, true, usageErrorf("invalid LISTEN_FDS=%q from systemd: expected a count of 1 or more", fds)
	}
	if o.socket != "" || o.addrSet {
		return nil, true, usageErrorf("-k, -p and -b cannot be used with socket activation: remove them or start gonbd outside systemd")
	}

	f := os.NewFile(listenFDsStart, "systemd socket")
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, true, usageErrorf("socket passed by systemd on fd %d: %v", listenFDsStart, err)
	}
	return l, true, nil
}

// listenUnix listens on a Unix socket at path. A stale socket file left by
// a server that is gone is removed first, as qemu-nbd does. A file that is
// not a socket, or a socket with a live server, is an error.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, usageErrorf("socket path %s exists and is not a socket: remove it or pick another path with -k", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, usageErrorf("socket %s is in use by another server: stop it or pick another path with -k", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, usageErrorf("remove stale socket %s: %v", path, err)
		}
	}

	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, usageErrorf("listen on %s: %v: check the -k path", path, unwrapAll(err))
	}
	return l, nil
}

// unwrapAll returns the innermost error, for messages that name the path
// themselves.
func unwrapAll(err error) error {
	for {
		inner := errors.Unwrap(err)
		if inner == nil {
			return err
		}
		err = inner
	}
}

// describeAddr returns the listener's address as an NBD URI for logs.
func describeAddr(l net.Listener, exportName string) string {
	switch a := l.Addr().(type) {
	case *net.UnixAddr:
		return fmt.Sprintf("nbd+unix:///%s?socket=%s", exportName, a.Name)
	default:
		return fmt.Sprintf("nbd://%s/%s", a.String(), exportName)
	}
}
