//go:build linux || darwin || freebsd || netbsd || openbsd

package portforward

import (
	"bytes"
	"net"
	"testing"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestCopyFromLocalWaitsWithoutBufferAndIsExact: a real socket takes the buffer-free readability wait.
// Bytes that arrived before the copy starts must still be read (with edge-triggered polling, a wait that
// assumed "not ready" would hang on them), and the copy must be exact up to the peer's half-close.
func TestCopyFromLocalWaitsWithoutBufferAndIsExact(t *testing.T) {
	client, server := tcpPair(t)
	if readWaiter(server) == nil {
		t.Fatal("readWaiter returned nil for a TCP connection: idle connections would pin a buffer")
	}
	src := make([]byte, 1<<20)
	for i := range src {
		src[i] = byte(i * 7)
	}
	if _, err := client.Write(src[:1000]); err != nil { // pending before the copy starts
		t.Fatal(err)
	}
	type result struct {
		n   int64
		err error
	}
	var dst bytes.Buffer
	done := make(chan result, 1)
	go func() {
		n, err := copyFromLocal(&dst, server, 0, nil)
		done <- result{n, err}
	}()
	if _, err := client.Write(src[1000:]); err != nil {
		t.Fatal(err)
	}
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.n != int64(len(src)) || !bytes.Equal(dst.Bytes(), src) {
		t.Fatalf("copied %d of %d bytes, err %v, equal %t", r.n, len(src), r.err, bytes.Equal(dst.Bytes(), src))
	}
}

// TestCopyFromLocalEndsWhenClosed: closing the local connection (abort, drain deadline) ends a copy parked
// in the readability wait with an error.
func TestCopyFromLocalEndsWhenClosed(t *testing.T) {
	_, server := tcpPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := copyFromLocal(&bytes.Buffer{}, server, 0, nil)
		done <- err
	}()
	server.Close()
	if err := <-done; err == nil {
		t.Fatal("copy of a closed connection returned nil, want an error")
	}
}
