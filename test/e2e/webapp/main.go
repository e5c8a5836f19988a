/*
Copyright 2026 The ssmtunnel Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Command webapp is the small web application of the end-to-end suite and of `make demo`, and the client
// that checks it from inside the cluster. Its responses are deterministic, so a client can verify every
// byte it receives through the tunnel without a copy of the server's data.
//
//	webapp serve --listen 127.0.0.1:8080 --listen 127.0.0.1:8081   # on the emulated instance's loopback
//	webapp load  --url http://web.ns.svc:80 --requests 100 --concurrency 100 --size 32768
//	webapp probe --url http://web.ns.svc:80 --duration 40s         # continuous requests, one summary
//	webapp get   --url http://web.ns.svc:81/port                   # prints one body
//
// load and probe print one JSON summary line on stdout and exit 1 when a check failed.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxSize bounds /bytes/{n}: large enough for a real transfer, small enough that a typo cannot exhaust memory.
const maxSize = 64 << 20

// Page is served at / so a human (and the demo) sees which app answered.
const Page = "<!doctype html><title>ssmtunnel demo</title><h1>Hello from the emulated instance</h1>\n"

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	case "probe":
		err = probe(os.Args[2:])
	case "get":
		err = get(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "webapp:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: webapp serve|load|probe|get [flags] (see -h of each)")
	os.Exit(2)
}

// Body returns the deterministic content of /bytes/{n}?seed={seed}.
func Body(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	var listens listFlag
	fs.Var(&listens, "listen", "address to serve on (repeatable); default 127.0.0.1:8080")
	_ = fs.Parse(args)
	if len(listens) == 0 {
		listens = listFlag{"127.0.0.1:8080"}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, len(listens))
	var servers []*http.Server
	for _, addr := range listens {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		srv := &http.Server{Handler: handler(port), ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		fmt.Printf("serving on %s\n", ln.Addr())
		go func() { errc <- srv.Serve(ln) }()
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(shutdownCtx)
	}
	return nil
}

func handler(port int) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, Page)
	})
	mux.HandleFunc("GET /port", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintf(w, "%d\n", port)
	})
	mux.HandleFunc("GET /bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil || n < 0 || n > maxSize {
			http.Error(w, fmt.Sprintf("size must be 0..%d", maxSize), http.StatusBadRequest)
			return
		}
		seed, _ := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
		b := Body(n, seed)
		sum := sha256.Sum256(b)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Header().Set("X-Sha256", hex.EncodeToString(sum[:]))
		_, _ = w.Write(b)
	})
	return mux
}

func newClient(timeout time.Duration, concurrency int) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        concurrency,
			MaxIdleConnsPerHost: concurrency,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
	}
}

// fetch gets /bytes/size?seed=seed and verifies it byte for byte.
func fetch(ctx context.Context, c *http.Client, base string, size int, seed uint64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/bytes/%d?seed=%d", base, size, seed), nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("seed %d: reading body after %d bytes: %w", seed, len(got), err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("seed %d: status %s", seed, resp.Status)
	}
	want := Body(size, seed)
	if !bytes.Equal(got, want) {
		at := 0
		for at < len(got) && at < len(want) && got[at] == want[at] {
			at++
		}
		return fmt.Errorf("seed %d: body differs at byte %d (got %d bytes, want %d)", seed, at, len(got), len(want))
	}
	return nil
}

// LoadResult is the JSON summary of `webapp load`.
type LoadResult struct {
	Requests   int      `json:"requests"`
	OK         int      `json:"ok"`
	Failed     int      `json:"failed"`
	Bytes      int64    `json:"bytes"`
	DurationMS int64    `json:"durationMs"`
	Errors     []string `json:"errors,omitempty"`
}

func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	url := fs.String("url", "", "base URL, e.g. http://web.ns.svc:80 (required)")
	n := fs.Int("requests", 100, "number of requests")
	conc := fs.Int("concurrency", 100, "requests in flight at once")
	size := fs.Int("size", 32<<10, "response size in bytes")
	timeout := fs.Duration("timeout", 60*time.Second, "timeout of each request")
	_ = fs.Parse(args)
	if *url == "" || *n < 1 || *conc < 1 || *size < 0 || *size > maxSize {
		return errors.New("load needs --url, --requests >= 1, --concurrency >= 1 and 0 <= --size <= 64 MiB")
	}
	c := newClient(*timeout, *conc)
	res := LoadResult{Requests: *n}
	var mu sync.Mutex
	sem := make(chan struct{}, *conc)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range *n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := fetch(context.Background(), c, *url, *size, uint64(i)+1)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Failed++
				if len(res.Errors) < 10 {
					res.Errors = append(res.Errors, err.Error())
				}
				return
			}
			res.OK++
			res.Bytes += int64(*size)
		})
	}
	wg.Wait()
	res.DurationMS = time.Since(start).Milliseconds()
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return err
	}
	if res.Failed > 0 {
		return fmt.Errorf("%d of %d requests failed", res.Failed, res.Requests)
	}
	return nil
}

// ProbeResult is the JSON summary of `webapp probe`.
type ProbeResult struct {
	Total  int `json:"total"`
	OK     int `json:"ok"`
	Failed int `json:"failed"`
	// MaxGapMS is the longest time between two successful responses: how long the Service did not answer.
	MaxGapMS int64    `json:"maxGapMs"`
	Errors   []string `json:"errors,omitempty"`
}

func probe(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	url := fs.String("url", "", "base URL (required)")
	duration := fs.Duration("duration", 40*time.Second, "how long to probe")
	interval := fs.Duration("interval", 50*time.Millisecond, "pause between the starts of two requests")
	workers := fs.Int("workers", 4, "parallel probing loops")
	size := fs.Int("size", 4096, "response size in bytes")
	timeout := fs.Duration("timeout", 3*time.Second, "timeout of each request")
	_ = fs.Parse(args)
	if *url == "" || *workers < 1 {
		return errors.New("probe needs --url and --workers >= 1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	// A new connection per request, so every request goes through the Service's load balancing again.
	c := &http.Client{Timeout: *timeout, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	var mu sync.Mutex
	var res ProbeResult
	lastOK := time.Now()
	fmt.Println("probing", *url)
	var wg sync.WaitGroup
	for w := range *workers {
		wg.Go(func() {
			tick := time.NewTicker(*interval)
			defer tick.Stop()
			for seq := uint64(w) << 32; ; seq++ {
				err := fetch(ctx, c, *url, *size, seq)
				now := time.Now()
				mu.Lock()
				if ctx.Err() == nil {
					res.Total++
					if err != nil {
						res.Failed++
						if len(res.Errors) < 20 {
							res.Errors = append(res.Errors, now.UTC().Format("15:04:05.000 ")+err.Error())
						}
					} else {
						res.OK++
						if gap := now.Sub(lastOK).Milliseconds(); gap > res.MaxGapMS {
							res.MaxGapMS = gap
						}
						lastOK = now
					}
				}
				mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	wg.Wait()
	if gap := time.Since(lastOK).Milliseconds(); gap > res.MaxGapMS {
		res.MaxGapMS = gap
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return err
	}
	if res.OK == 0 {
		return errors.New("no request succeeded")
	}
	return nil
}

func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	url := fs.String("url", "", "URL to fetch (required)")
	timeout := fs.Duration("timeout", 10*time.Second, "request timeout")
	_ = fs.Parse(args)
	if *url == "" {
		return errors.New("get needs --url")
	}
	resp, err := newClient(*timeout, 1).Get(*url)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", *url, resp.Status)
	}
	_, err = io.Copy(os.Stdout, resp.Body)
	return err
}
