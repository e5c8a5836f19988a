package portforward

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParsePortPairs(t *testing.T) {
	tests := []struct {
		args    []string
		want    []PortPair
		wantErr string
	}{
		{args: []string{"8080:80"}, want: []PortPair{{8080, 80}}},
		{args: []string{"5432"}, want: []PortPair{{5432, 5432}}},
		{args: []string{"0:80", ":443", "0:22"}, want: []PortPair{{0, 80}, {0, 443}, {0, 22}}},
		{args: nil, wantErr: "at least one"},
		{args: []string{"80:0"}, wantErr: "LOCAL:REMOTE"},
		{args: []string{"70000:80"}, wantErr: "LOCAL:REMOTE"},
		{args: []string{"a:b"}, wantErr: "LOCAL:REMOTE"},
		{args: []string{"1:2:3"}, wantErr: "LOCAL:REMOTE"},
		{args: []string{"-1:80"}, wantErr: "LOCAL:REMOTE"},
		{args: []string{"8080:80", "8080:81"}, wantErr: "used twice"},
	}
	for _, tt := range tests {
		got, err := ParsePortPairs(tt.args)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParsePortPairs(%q) error %v, want one containing %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePortPairs(%q): %v", tt.args, err)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("ParsePortPairs(%q) = %v, want %v", tt.args, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("ParsePortPairs(%q) = %v, want %v", tt.args, got, tt.want)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Target: "i-0123456789abcdef0", Ports: []PortPair{{0, 80}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	bad := map[string]Config{
		"target":                    {Target: "x", Ports: ok.Ports},
		"no ports":                  {Target: ok.Target},
		"sessions":                  {Target: ok.Target, Ports: ok.Ports, Sessions: MaxSessionsPerPort + 1},
		"address":                   {Target: ok.Target, Ports: ok.Ports, Address: "127.0.0.1:80"},
		"reason":                    {Target: ok.Target, Ports: ok.Ports, Reason: "a\nb"},
		"drain":                     {Target: ok.Target, Ports: ok.Ports, DrainTimeout: -1},
		"stream stall timeout":      {Target: ok.Target, Ports: ok.Ports, StreamStallTimeout: -1},
		"idle park after":           {Target: ok.Target, Ports: ok.Ports, IdleParkAfter: -1},
		"receive buffer below 64Ki": {Target: ok.Target, Ports: ok.Ports, SessionReceiveBuffer: MinSessionReceiveBuffer - 1},
		"receive buffer above 1Gi":  {Target: ok.Target, Ports: ok.Ports, SessionReceiveBuffer: MaxSessionReceiveBuffer + 1},
	}
	for name, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
}

// chunkRecorder records the size of every write.
type chunkRecorder struct {
	bytes.Buffer
	writes []int
}

func (c *chunkRecorder) Write(p []byte) (int, error) {
	c.writes = append(c.writes, len(p))
	return c.Buffer.Write(p)
}

func TestPumpToIsExactAndBorrowsBigBufferOnlyWhileBusy(t *testing.T) {
	src := make([]byte, 300<<10)
	for i := range src {
		src[i] = byte(i * 31)
	}
	var dst chunkRecorder
	n, err := pumpTo(&dst, bytes.NewReader(src), make([]byte, smallBufSize))
	if err != nil || n != int64(len(src)) || !bytes.Equal(dst.Bytes(), src) {
		t.Fatalf("pumpTo copied %d bytes, err %v, equal %t", n, err, bytes.Equal(dst.Bytes(), src))
	}
	if dst.writes[0] != smallBufSize || dst.writes[1] != bigBufSize {
		t.Errorf("first writes %v: want a small read, then big-buffer reads while the source keeps up", dst.writes[:2])
	}
	// A trickling source (one byte per read) never borrows the big buffer.
	var trickle chunkRecorder
	if _, err := pumpTo(&trickle, iotest.OneByteReader(bytes.NewReader(src[:5000])), make([]byte, smallBufSize)); err != nil {
		t.Fatal(err)
	}
	for _, w := range trickle.writes {
		if w != 1 {
			t.Fatalf("trickle write of %d bytes", w)
		}
	}
	// Errors other than EOF are returned.
	boom := errors.New("boom")
	if _, err := pumpTo(io.Discard, iotest.ErrReader(boom), make([]byte, smallBufSize)); !errors.Is(err, boom) {
		t.Errorf("pumpTo error %v, want %v", err, boom)
	}
}
