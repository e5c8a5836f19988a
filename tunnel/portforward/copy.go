package portforward

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Copy buffers. An idle connection must not pin a buffer (its whole budget is ~10 KB). Reading
// from a local socket first waits for readability without a buffer (readWaiter), then borrows a pooled
// buffer for one read and its write, and gives it back before waiting again. Where that wait is not
// available, a connection reads into a small per-connection buffer and borrows a large pooled one only while
// data keeps filling the small one. The other direction needs no buffer at all: smux streams implement
// io.WriterTo and hand their own buffers to the local socket.
const (
	smallBufSize = 2 << 10
	bigBufSize   = 32 << 10
)

// muxReadSize is the most one local read takes for a stream: one full smux frame (smuxFrameSizeFor), so a
// read becomes exactly one smux frame and whole data channel payloads, not a full frame plus a sliver.
const muxReadSize = bigBufSize - smuxHeaderSize

var bigBufs = sync.Pool{New: func() any { b := make([]byte, bigBufSize); return &b }}

// errParked: copyFromLocal stopped because the connection was idle and park took it over.
var errParked = errors.New("portforward: connection parked while idle")

// copyFromLocal copies the local connection src to dst until src ends, holding a buffer only while data
// moves. It returns the bytes copied and nil on EOF. With park non-nil, after idleAfter without data it
// calls park; if park reports true, the connection is parked and copyFromLocal returns errParked.
func copyFromLocal(dst io.Writer, src net.Conn, idleAfter time.Duration, park func() bool) (int64, error) {
	wait := readWaiter(src)
	if wait == nil {
		return pumpTo(dst, src, make([]byte, smallBufSize))
	}
	var total int64
	for {
		if park != nil {
			if err := src.SetReadDeadline(time.Now().Add(idleAfter)); err != nil {
				return total, err
			}
		}
		err := wait()
		if park != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			// The expired deadline may stay: every round, this one or the resumed connection's first, sets a
			// new one before it waits.
			if park() {
				return total, errParked
			}
			continue
		}
		if err != nil {
			return total, err
		}
		n, err := copyOnce(dst, src)
		total += int64(n)
		switch {
		case err == io.EOF:
			return total, nil
		case park != nil && errors.Is(err, os.ErrDeadlineExceeded):
			// The deadline passed between the wait and the read, which then refuses to read at all (n is 0):
			// the next round sets a new one.
		case err != nil:
			return total, err
		}
	}
}

// copyOnce does one read of src into a borrowed buffer and writes what it got to dst.
//
// A buffer whose write failed never goes back to the pool. smux's Stream.Write returns as soon as the
// session dies or its socket fails, while its send loop may still be copying the frame out of the buffer;
// a pooled buffer would then be filled by another connection's read under that copy, and its bytes framed
// into this connection's stream. The garbage collector frees it once smux lets go.
func copyOnce(dst io.Writer, src io.Reader) (int, error) {
	big := bigBufs.Get().(*[]byte)
	n, rerr := src.Read((*big)[:muxReadSize])
	if n > 0 {
		w, werr := dst.Write((*big)[:n])
		if werr != nil {
			return w, werr
		}
	}
	bigBufs.Put(big)
	return n, rerr
}

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
				big = nil // smux may still read it: see copyOnce
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
