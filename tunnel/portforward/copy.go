package portforward

import (
	"io"
	"sync"
)

// Copy buffers. An idle connection must not pin a large buffer (issue 4: ~10 KB per idle connection), so a
// connection reads into a small per-connection buffer and borrows a large pooled one only while data keeps
// filling the small one, giving it back after the first short read. The other direction needs no buffer at
// all: smux streams implement io.WriterTo and hand their own buffers to the local socket.
const (
	smallBufSize = 2 << 10
	bigBufSize   = 32 << 10
)

var bigBufs = sync.Pool{New: func() any { b := make([]byte, bigBufSize); return &b }}

// pumpTo copies src to dst until src ends, like io.Copy but with the small/borrowed buffer scheme. It
// returns the bytes copied and nil on EOF.
func pumpTo(dst io.Writer, src io.Reader, small []byte) (int64, error) {
	var total int64
	buf := small
	var big *[]byte
	defer func() {
		if big != nil {
			bigBufs.Put(big)
		}
	}()
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
			switch {
			case n == len(buf) && big == nil:
				big = bigBufs.Get().(*[]byte)
				buf = *big
			case n < len(buf) && big != nil:
				bigBufs.Put(big)
				big, buf = nil, small
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}
