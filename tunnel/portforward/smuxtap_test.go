package portforward

import (
	"encoding/binary"
	"testing"
)

func smuxFrame(cmd byte, sid uint32, payload int) []byte {
	f := make([]byte, smuxHeaderSize+payload)
	f[0], f[1] = 1, cmd
	binary.LittleEndian.PutUint16(f[2:4], uint16(payload))
	binary.LittleEndian.PutUint32(f[4:8], sid)
	return f
}

// TestSmuxTapCountsPayloadPerStreamAcrossAnySplit: smux reads the byte stream in pieces of any size
// (header alone, then payload; or a chunk cutting a header), so the tap must credit PSH payload bytes to
// the right stream whatever the split, and nothing for SYN, FIN or NOP.
func TestSmuxTapCountsPayloadPerStreamAcrossAnySplit(t *testing.T) {
	var stream []byte
	stream = append(stream, smuxFrame(0, 3, 0)...) // SYN
	stream = append(stream, smuxFrame(smuxCmdPSH, 3, 1000)...)
	stream = append(stream, smuxFrame(3, 0, 0)...) // NOP
	stream = append(stream, smuxFrame(smuxCmdPSH, 5, 32768)...)
	stream = append(stream, smuxFrame(smuxCmdPSH, 3, 7)...)
	stream = append(stream, smuxFrame(1, 5, 0)...) // FIN
	for _, chunk := range []int{1, 3, 8, 1000, 4096, len(stream)} {
		rec := &recordedEvents{got: map[uint32]int{}, fins: map[uint32]int{}}
		got := rec.got
		tap := smuxTap{events: rec}
		for b := stream; len(b) > 0; {
			n := min(chunk, len(b))
			tap.observe(b[:n])
			b = b[n:]
		}
		if got[3] != 1007 || got[5] != 32768 || len(got) != 2 {
			t.Errorf("chunks of %d: credited %v, want stream 3: 1007, stream 5: 32768", chunk, got)
		}
		if rec.fins[5] != 1 || len(rec.fins) != 1 {
			t.Errorf("chunks of %d: FINs %v, want one for stream 5", chunk, rec.fins)
		}
	}
}

type recordedEvents struct{ got, fins, opens map[uint32]int }

func (r *recordedEvents) opened(sid uint32)         { r.opens[sid]++ }
func (r *recordedEvents) arrived(sid uint32, n int) { r.got[sid] += n }
func (r *recordedEvents) finished(sid uint32)       { r.fins[sid]++ }

// TestObserveSentSeesOnlySYN: smux writes each frame in one Write; only an 8-byte SYN registers a stream.
func TestObserveSentSeesOnlySYN(t *testing.T) {
	rec := &recordedEvents{opens: map[uint32]int{}}
	for _, f := range [][]byte{smuxFrame(0, 7, 0), smuxFrame(smuxCmdPSH, 9, 0), smuxFrame(1, 11, 0), smuxFrame(3, 0, 0)} {
		observeSent(f, rec)
	}
	if rec.opens[7] != 1 || len(rec.opens) != 1 {
		t.Errorf("opened %v, want only stream 7", rec.opens)
	}
}

// TestSmuxFrameSizeFillsWholePayloads: a full smux frame, header included, is a whole number of data
// channel payloads, so no frame leaves an 8-byte remainder to travel alone.
func TestSmuxFrameSizeFillsWholePayloads(t *testing.T) {
	for _, p := range []int{1024, 1000, 4096, 32 << 10, 64 << 10, 1} {
		fs := smuxFrameSizeFor(p)
		if fs <= 0 || fs > 32768 {
			t.Fatalf("payload %d: frame size %d out of smux's range", p, fs)
		}
		if p <= 32<<10 && (fs+smuxHeaderSize)%p != 0 {
			t.Errorf("payload %d: a frame of %d bytes + header leaves a remainder of %d", p, fs, (fs+smuxHeaderSize)%p)
		}
	}
}
