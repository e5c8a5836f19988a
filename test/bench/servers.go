package main

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The destination servers: what the emulated agent dials at the far end of the tunnel, and what the direct
// baseline reaches through the delaying proxy. They run in a child process of the harness (role "servers"),
// so that the 10,000 connections of the scale scenario count against that process's file limit and not the
// load generator's.
//
// The TCP server speaks a one-byte command, then:
//
//	'D' uint64 N  the server writes N bytes, then discards input until EOF (download).
//	'U' uint64 N  the server reads N bytes, answers 'K', then discards input until EOF (upload).
//	'E'           the server echoes everything until EOF (latency, scale).
//
// There is no half-close anywhere: the multiplexed tunnel does not carry one (§9.4), so every exchange ends
// on a byte count the receiver knows in advance.
const (
	opDownload = 'D'
	opUpload   = 'U'
	opEcho     = 'E'
)

// pageAssets is the page-load workload: 109 assets totalling about 2.5 MB, shaped like a single-page web
// app: three large bundles, six medium chunks (styles, fonts, a sprite) and 100 small assets (icons,
// templates, JSON). It is deterministic, so every run and both processes agree on it.
func pageAssets() []int {
	sizes := []int{900 << 10, 520 << 10, 260 << 10, 64 << 10, 48 << 10, 40 << 10, 32 << 10, 28 << 10, 24 << 10}
	const total = 2_500_000
	used := 0
	for _, s := range sizes {
		used += s
	}
	// 100 small assets, log-uniform between 600 B and 12 KiB, scaled to fill the remainder exactly.
	r := mrand.New(mrand.NewPCG(109, 2500))
	small := make([]float64, 100)
	sum := 0.0
	for i := range small {
		small[i] = 600 * math.Exp(r.Float64()*math.Log(12<<10/600.0))
		sum += small[i]
	}
	remain := total - used
	acc := 0
	for i, v := range small {
		n := int(v * float64(remain) / sum)
		if i == len(small)-1 {
			n = remain - acc
		}
		acc += n
		sizes = append(sizes, n)
	}
	return sizes
}

// servers is the running set of destination servers.
type servers struct {
	HTTP string `json:"http"`
	TCP  string `json:"tcp"`

	httpSrv *http.Server
	tcpLn   net.Listener
	wg      sync.WaitGroup
}

// payloadBlock is the content served by downloads and assets: random, so nothing on the path could compress it.
var payloadBlock = func() []byte {
	b := make([]byte, 1<<20)
	_, _ = rand.Read(b)
	return b
}()

func startServers() (*servers, error) {
	s := &servers{}
	assets := pageAssets()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /asset/{i}", func(w http.ResponseWriter, r *http.Request) {
		i, err := strconv.Atoi(r.PathValue("i"))
		if err != nil || i < 0 || i >= len(assets) {
			http.NotFound(w, r)
			return
		}
		n := assets[i]
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Length", strconv.Itoa(n))
		for n > 0 {
			k := min(n, len(payloadBlock))
			if _, err := w.Write(payloadBlock[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.HTTP = hl.Addr().String()
	s.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); _ = s.httpSrv.Serve(hl) }()

	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		hl.Close()
		return nil, err
	}
	s.tcpLn = tl
	s.TCP = tl.Addr().String()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go serveTCP(c)
		}
	}()
	return s, nil
}

func (s *servers) Close() {
	_ = s.httpSrv.Close()
	_ = s.tcpLn.Close()
	s.wg.Wait()
}

func serveTCP(c net.Conn) {
	defer c.Close()
	setNoDelay(c)
	var op [1]byte
	if _, err := io.ReadFull(c, op[:]); err != nil {
		return
	}
	switch op[0] {
	case opDownload:
		n, err := readLen(c)
		if err != nil {
			return
		}
		for n > 0 {
			k := min(n, uint64(len(payloadBlock)))
			if _, err := c.Write(payloadBlock[:k]); err != nil {
				return
			}
			n -= k
		}
		_, _ = io.Copy(io.Discard, c)
	case opUpload:
		n, err := readLen(c)
		if err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, c, int64(n)); err != nil {
			return
		}
		if _, err := c.Write([]byte{'K'}); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
	case opEcho:
		// 2 KiB per connection: the 10,000 idle connections of the scale scenario cost 20 MB here, in the
		// servers process, which is not the one measured.
		buf := make([]byte, 2048)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
}

func readLen(r io.Reader) (uint64, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(b[:]), nil
}

// --- client side of the TCP protocol ---

func writeOp(w io.Writer, op byte, n uint64) error {
	var b [9]byte
	b[0] = op
	binary.BigEndian.PutUint64(b[1:], n)
	if op == opEcho {
		_, err := w.Write(b[:1])
		return err
	}
	_, err := w.Write(b[:])
	return err
}

var readBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// download asks for n bytes and reads them all.
func download(c net.Conn, n uint64) error {
	if err := writeOp(c, opDownload, n); err != nil {
		return err
	}
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	got, err := io.CopyBuffer(io.Discard, io.LimitReader(c, int64(n)), *bp)
	if err != nil {
		return err
	}
	if uint64(got) != n {
		return fmt.Errorf("download: got %d of %d bytes", got, n)
	}
	return nil
}

// upload sends n bytes and waits for the server's receipt.
func upload(c net.Conn, n uint64) error {
	if err := writeOp(c, opUpload, n); err != nil {
		return err
	}
	left := n
	for left > 0 {
		k := min(left, uint64(256<<10), uint64(len(payloadBlock)))
		if _, err := c.Write(payloadBlock[:k]); err != nil {
			return err
		}
		left -= k
	}
	var k [1]byte
	if _, err := io.ReadFull(c, k[:]); err != nil {
		return fmt.Errorf("upload: waiting for the receipt: %w", err)
	}
	if k[0] != 'K' {
		return errors.New("upload: bad receipt")
	}
	return nil
}

// serversChild is the body of the "servers" child process: start, print the addresses as one JSON line, and
// serve until the parent closes stdin.
func serversChild(stdout io.Writer, stdin io.Reader) error {
	s, err := startServers()
	if err != nil {
		return err
	}
	defer s.Close()
	if err := printJSONLine(stdout, s); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, bufio.NewReader(stdin))
	return nil
}
