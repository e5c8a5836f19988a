package portforward

import "encoding/binary"

// smuxTap follows the smux v1 frames in the byte stream the client's smux session reads (§9.4: header
// ver(1) cmd(1) length(2, LE) streamId(4, LE), then length bytes) and reports each stream's PSH payload
// bytes as they are handed to smux. smux v1 exposes no per-stream buffer level; with what the local
// connection accepted, this gives the bytes smux holds for a stream, which the stalled-stream watchdog
// needs. It only observes: smux still parses and validates the stream itself.
type smuxTap struct {
	hdr     [smuxHeaderSize]byte
	hdrN    int
	left    int // payload bytes of the current frame still to come
	psh     bool
	sid     uint32
	onBytes func(sid uint32, n int)
}

const (
	smuxHeaderSize = 8
	smuxCmdPSH     = 2
)

// observe consumes the next bytes of the stream, in order.
func (t *smuxTap) observe(b []byte) {
	for len(b) > 0 {
		if t.left > 0 {
			n := min(t.left, len(b))
			if t.psh {
				t.onBytes(t.sid, n)
			}
			t.left -= n
			b = b[n:]
			continue
		}
		n := copy(t.hdr[t.hdrN:], b)
		t.hdrN += n
		b = b[n:]
		if t.hdrN < smuxHeaderSize {
			return
		}
		t.hdrN = 0
		t.psh = t.hdr[1] == smuxCmdPSH
		t.left = int(binary.LittleEndian.Uint16(t.hdr[2:4]))
		t.sid = binary.LittleEndian.Uint32(t.hdr[4:8])
	}
}
