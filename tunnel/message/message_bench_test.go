package message

import (
	"fmt"
	"sync"
	"testing"
)

// Micro-benchmarks of the per-frame hot path: every 1 KiB of tunnelled data costs one
// encode, one decode (with its SHA-256 digest check) and one ack in the reverse direction (§7.1, §9.6).
// Run with: go test -run '^$' -bench . -benchmem ./tunnel/message/

var benchSizes = []int{0, 1024, 32 << 10}

func benchMessage(size int) Message {
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i)
	}
	return Message{
		Type:           InputStreamData,
		SchemaVersion:  1,
		CreatedDate:    1700000000000,
		SequenceNumber: 123456,
		Flags:          0,
		MessageID:      NewID(),
		PayloadType:    PayloadOutput,
		Payload:        payload,
	}
}

// BenchmarkAppendBinaryPooled encodes into a buffer taken from a sync.Pool, as a sender should: the steady
// state must not allocate.
func BenchmarkAppendBinaryPooled(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			m := benchMessage(size)
			pool := sync.Pool{New: func() any { s := make([]byte, 0, HeaderSize+64<<10); return &s }}
			b.SetBytes(int64(m.Size()))
			b.ReportAllocs()
			for b.Loop() {
				bp := pool.Get().(*[]byte)
				out, err := m.AppendBinary((*bp)[:0])
				if err != nil {
					b.Fatal(err)
				}
				*bp = out
				pool.Put(bp)
			}
		})
	}
}

// BenchmarkMarshalBinary is the allocating form, for comparison with the pooled one.
func BenchmarkMarshalBinary(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			m := benchMessage(size)
			b.SetBytes(int64(m.Size()))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.MarshalBinary(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecode validates the header and the digest; the payload aliases the frame, so it must not allocate.
func BenchmarkDecode(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			m := benchMessage(size)
			frame, err := m.MarshalBinary()
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				got, err := Decode(frame)
				if err != nil {
					b.Fatal(err)
				}
				if got.SequenceNumber != m.SequenceNumber {
					b.Fatalf("decoded seq %d, want %d", got.SequenceNumber, m.SequenceNumber)
				}
			}
		})
	}
}

// BenchmarkAckEncodePooled builds the ack of a received data frame into pooled buffers: the payload JSON and
// the frame. One of these is sent per data frame received (§7.1).
func BenchmarkAckEncodePooled(b *testing.B) {
	of := benchMessage(1024)
	payloadBuf := make([]byte, 0, 256)
	frameBuf := make([]byte, 0, HeaderSize+256)
	b.ReportAllocs()
	for b.Loop() {
		payloadBuf = AppendAckPayload(payloadBuf[:0], &of)
		ack := Message{
			Type: Acknowledge, SchemaVersion: 1, CreatedDate: 1700000000000,
			Flags: FlagSYN | FlagFIN, MessageID: of.MessageID, Payload: payloadBuf,
		}
		var err error
		frameBuf, err = ack.AppendBinary(frameBuf[:0])
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewAck is the convenience constructor (fresh random MessageId, new payload slice) plus encode.
func BenchmarkNewAck(b *testing.B) {
	of := benchMessage(1024)
	frameBuf := make([]byte, 0, HeaderSize+256)
	b.ReportAllocs()
	for b.Loop() {
		ack := NewAck(&of, 1700000000000)
		var err error
		frameBuf, err = ack.AppendBinary(frameBuf[:0])
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeAck decodes a received ack frame and its JSON payload, as the sender does per data frame.
func BenchmarkDecodeAck(b *testing.B) {
	of := benchMessage(1024)
	ack := NewAck(&of, 1700000000000)
	frame, err := ack.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		m, err := Decode(frame)
		if err != nil {
			b.Fatal(err)
		}
		a, err := DecodeAck(m.Payload)
		if err != nil {
			b.Fatal(err)
		}
		if a.AcknowledgedMessageSequenceNumber != of.SequenceNumber {
			b.Fatalf("ack seq %d, want %d", a.AcknowledgedMessageSequenceNumber, of.SequenceNumber)
		}
	}
}
