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

// Command smoke is the workload of hack/cluster-smoke.sh, which proves the local cluster
// works end to end with an image built from source (no shell, no registry):
//
//	smoke serve :8080             HTTP server answering "hello from <hostname>"
//	smoke get URL...              GET each URL (retrying for up to 30 s), print the bodies; exit 1 on failure
//	smoke blocked URL             exit 0 only if the request fails (pod egress is rejected)
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: smoke serve ADDR | smoke get URL... | smoke blocked URL")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2])
	case "get":
		for _, u := range os.Args[2:] {
			if err = get(u, 30*time.Second); err != nil {
				break
			}
		}
	case "blocked":
		if e := get(os.Args[2], 0); e == nil {
			err = fmt.Errorf("%s was reachable; pod egress should be blocked", os.Args[2])
		} else {
			fmt.Printf("blocked as expected: %v\n", e)
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "smoke:", err)
		os.Exit(1)
	}
}

func serve(addr string) error {
	host, _ := os.Hostname()
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(
		func(w http.ResponseWriter, _ *http.Request) { _, _ = fmt.Fprintf(w, "hello from %s\n", host) })}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.Background())
	}()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// get fetches url, retrying until the deadline passes (DNS and endpoints may still be
// propagating when a test pod starts).
func get(url string, retryFor time.Duration) error {
	deadline := time.Now().Add(retryFor)
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				fmt.Printf("GET %s: %s", url, body)
				return nil
			}
			err = fmt.Errorf("status %d, read error %v", resp.StatusCode, rerr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("GET %s: %w", url, err)
		}
		time.Sleep(time.Second)
	}
}
