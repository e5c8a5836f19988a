package portforward

import (
	"bytes"
	"errors"
	"testing"
)

// holdingWriter keeps the slice it was given and fails, as an smux stream does when its session dies while
// the send loop still holds the frame.
type holdingWriter struct{ held []byte }

func (w *holdingWriter) Write(p []byte) (int, error) {
	w.held = p
	return 0, errors.New("session closed")
}

// TestFailedWriteKeepsItsBuffer: after a failed write the buffer is not handed to the next connection, so
// the next read cannot overwrite bytes the dead session may still be framing.
func TestFailedWriteKeepsItsBuffer(t *testing.T) {
	first, second := bytes.Repeat([]byte{'a'}, 100), bytes.Repeat([]byte{'b'}, 100)
	for i := range 200 {
		w := &holdingWriter{}
		if _, err := copyOnce(w, bytes.NewReader(first)); err == nil {
			t.Fatal("copyOnce returned no error from a failed write")
		}
		var next bytes.Buffer
		if _, err := copyOnce(&next, bytes.NewReader(second)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(w.held, first) {
			t.Fatalf("round %d: the failed write's buffer now holds %q: another connection's read reused it", i, w.held[:8])
		}
	}
}
