package portforward

import "encoding/binary"

// smuxTap follows the smux v1 frames in the byte stream the client's smux session reads (§9.4: header
// ver(1) cmd(1) length(2, LE) streamId(4, LE), then length bytes) and reports, per stream, PSH payload bytes
// and FINs as they are handed to smux, that is, just before smux buffers them. smux v1 exposes no
// per-stream buffer level; with what the local connection accepted, this gives the bytes smux holds for a
// stream, which the stalled-stream watchdog needs, and the moment a stream has something for its local
// connection, which starts its copy goroutine. It only observes: smux still parses and validates the
// stream itself.
type smuxTap struct {
	hdr    [smuxHeaderSize]byte
	hdrN   int
	left   int // payload bytes of the current frame still to come
	psh    bool
	sid    uint32
	events streamEvents
}

// streamEvents is told what passes through a session's chanConn for each stream.
type streamEvents interface {
	// opened: smux sent the stream's SYN, so the agent may answer from now on.
	opened(sid uint32)
	// arrived: n payload bytes for the stream are being handed to smux.
	arrived(sid uint32, n int)
	// finished: the agent's FIN for the stream is being handed to smux.
	finished(sid uint32)
}

const (
	smuxHeaderSize = 8
	smuxVersion    = 1
	smuxCmdSYN     = 0
	smuxCmdFIN     = 1
	smuxCmdPSH     = 2
)

// observe consumes the next bytes of the stream, in order.
func (t *smuxTap) observe(b []byte) {
	for len(b) > 0 {
		if t.left > 0 {
			n := min(t.left, len(b))
			if t.psh {
				t.events.arrived(t.sid, n)
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
		// A frame of another version is a protocol error that ends the session in smux: it reports nothing.
		valid := t.hdr[0] == smuxVersion
		t.psh = valid && t.hdr[1] == smuxCmdPSH
		t.left = int(binary.LittleEndian.Uint16(t.hdr[2:4]))
		t.sid = binary.LittleEndian.Uint32(t.hdr[4:8])
		if valid && t.hdr[1] == smuxCmdFIN {
			t.events.finished(t.sid)
		}
	}
}

// observeSent looks at one frame smux writes. smux's send loop writes each frame, header first, in one
// Write when the connection has no WriteBuffers (chanConn has none), so a SYN is an 8-byte write.
func observeSent(p []byte, events streamEvents) {
	if len(p) == smuxHeaderSize && p[1] == smuxCmdSYN {
		events.opened(binary.LittleEndian.Uint32(p[4:8]))
	}
}
