package message

import (
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sync"
)

// ID is a MessageId in canonical UUID byte order. On the wire its two 8-byte halves are swapped (§5).
type ID [16]byte

// idSources hands out ChaCha8 generators, each seeded once from crypto/rand. Every data frame and every
// ack carries a MessageId (§5), and a crypto/rand read per frame shows in the latency profile.
// Message IDs need uniqueness, not secrecy: 122 random bits from a cryptographically seeded stream make a
// collision as unlikely as with crypto/rand. A pool instead of one locked generator keeps concurrent
// senders (reader goroutine acking, writer sending) from contending.
var idSources = sync.Pool{New: func() any {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // crypto/rand.Read never fails on supported platforms.
	return rand.NewChaCha8(seed)
}}

// NewID returns a random version-4 UUID.
func NewID() ID {
	var id ID
	src := idSources.Get().(*rand.ChaCha8)
	binary.LittleEndian.PutUint64(id[0:8], src.Uint64())
	binary.LittleEndian.PutUint64(id[8:16], src.Uint64())
	idSources.Put(src)
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return id
}

// putWire writes id with its halves swapped: wire bytes 0..7 are UUID bytes 8..15 (§5).
func (id ID) putWire(b []byte) {
	copy(b[0:8], id[8:16])
	copy(b[8:16], id[0:8])
}

func idFromWire(b []byte) ID {
	var id ID
	copy(id[8:16], b[0:8])
	copy(id[0:8], b[8:16])
	return id
}

// String is the lowercase hyphenated form that acks carry.
func (id ID) String() string {
	var buf [36]byte
	return string(id.AppendText(buf[:0]))
}

// AppendText appends the hyphenated form to b without allocating; acks are built on the hot path (one per
// data frame, §7.1).
func (id ID) AppendText(b []byte) []byte {
	var buf [36]byte
	hex.Encode(buf[0:8], id[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], id[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], id[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], id[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:36], id[10:16])
	return append(b, buf[:]...)
}

// ParseID reads the hyphenated form.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, fmt.Errorf("message id %q is not a hyphenated UUID", s)
	}
	compact := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	if _, err := hex.Decode(id[:], []byte(compact)); err != nil {
		return ID{}, fmt.Errorf("message id %q: %w", s, err)
	}
	return id, nil
}
