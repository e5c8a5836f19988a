package emulator

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// DemoMaxBytes bounds /bytes/N of the demo web app.
const DemoMaxBytes = 1 << 30

// DemoIndex is the demo web app's index page. It references the assets, so a browser (or a test) loading
// it opens several connections at once: the case multiplexed port forwarding is for.
const DemoIndex = `<!doctype html>
<html><head><title>ssmtunnel demo</title><link rel="stylesheet" href="/assets/style.css">
<script src="/assets/app.js"></script></head>
<body><h1>Hello from the emulated instance</h1>
<img src="/assets/image-64k.bin" alt=""><img src="/assets/image-256k.bin" alt="">
</body></html>
`

// DemoAssets are the demo app's assets by path: deterministic bodies of known sizes.
var DemoAssets = map[string][]byte{
	"/assets/style.css":      DemoBytes(4 << 10),
	"/assets/app.js":         DemoBytes(16 << 10),
	"/assets/image-64k.bin":  DemoBytes(64 << 10),
	"/assets/image-256k.bin": DemoBytes(256 << 10),
}

// DemoBytes returns the first n bytes of the demo app's deterministic stream: byte i is a function of i
// alone (a 32-bit LCG), so a client can check any response byte for byte without a copy of the server.
func DemoBytes(n int) []byte {
	b := make([]byte, n)
	fillDemo(b, 0)
	return b
}

// fillDemo writes the demo stream's bytes from offset off into b.
func fillDemo(b []byte, off int) {
	for i := range b {
		x := uint32(off+i)*1664525 + 1013904223
		b[i] = byte(x>>24) ^ byte(x>>8)
	}
}

// DemoWeb is a small deterministic web app for demos and tests run behind the emulator's agents: "/" is
// DemoIndex, /assets/... are DemoAssets, and /bytes/N streams the first N bytes of DemoBytes.
func DemoWeb() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, DemoIndex)
	})
	for path, body := range DemoAssets {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write(body)
		})
	}
	mux.HandleFunc("GET /bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil || n < 0 || n > DemoMaxBytes {
			http.Error(w, fmt.Sprintf("N must be an integer from 0 to %d", DemoMaxBytes), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Header().Set("Content-Type", "application/octet-stream")
		buf := make([]byte, 32<<10)
		for off := 0; off < n; {
			chunk := buf[:min(len(buf), n-off)]
			fillDemo(chunk, off)
			if _, err := w.Write(chunk); err != nil {
				return
			}
			off += len(chunk)
		}
	})
	return mux
}
