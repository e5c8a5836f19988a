package message

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHandshakeRequestSessionType(t *testing.T) {
	// The example of §8.2.
	raw := `{"AgentVersion":"3.3.987.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":` +
		`{"SessionType":"Port","Properties":{"localPortNumber":"9000","portNumber":"80","type":"LocalPortForwarding"}}}]}`
	var r HandshakeRequest
	if err := DecodeJSON(PayloadHandshakeRequest, []byte(raw), &r); err != nil {
		t.Fatal(err)
	}
	st, err := r.SessionType()
	if err != nil {
		t.Fatal(err)
	}
	want := SessionTypeRequest{SessionType: SessionTypePort, Properties: PortParameters{
		PortNumber: "80", LocalPortNumber: "9000", Type: LocalPortForwarding}}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Fatalf("SessionType (-want +got):\n%s", diff)
	}
	if _, err := (&HandshakeRequest{AgentVersion: "3.3.987.0"}).SessionType(); err == nil {
		t.Fatal("SessionType of a request without actions succeeded")
	}
	err = DecodeJSON(PayloadHandshakeRequest, []byte("{"), &r)
	if err == nil || !strings.Contains(err.Error(), "HandshakeRequest payload is not valid JSON") {
		t.Fatalf("DecodeJSON error = %v", err)
	}
}

func TestHandshakeResponseShape(t *testing.T) {
	// §8.3 [verified] shape, with keys in the official order.
	r := HandshakeResponse{ClientVersion: "1.2.0.0", ProcessedClientActions: []ProcessedClientAction{
		{ActionType: ActionSessionType, ActionStatus: ActionSuccess}}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"ClientVersion":"1.2.0.0","ProcessedClientActions":[{"ActionType":"SessionType","ActionStatus":1,"ActionResult":null,"Error":""}],"Errors":null}`
	if string(b) != want {
		t.Fatalf("HandshakeResponse JSON\n got %s\nwant %s", b, want)
	}
}

func TestOpenDataChannelShape(t *testing.T) {
	in := OpenDataChannelInput{MessageSchemaVersion: "1.0", RequestID: "r", TokenValue: "t", ClientID: "c", ClientVersion: "1.2.835.0"}
	b, _ := json.Marshal(in)
	want := `{"MessageSchemaVersion":"1.0","RequestId":"r","TokenValue":"t","ClientId":"c","ClientVersion":"1.2.835.0"}`
	if string(b) != want {
		t.Fatalf("OpenDataChannel JSON\n got %s\nwant %s", b, want)
	}
}

func TestVersions(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"3.0.196.0", "3.0.196.0", 0},
		{"3.0.222.0", "3.0.196.0", 1},
		{"3.0.196.0", "3.0.222.0", -1},
		{"3.3.987.0", "3.1.1511.0", 1},
		{"1.2.0.0", "1.2.331.0", -1},
		{"10.0.0.0", "9.9.9.9", 1},
	}
	for _, c := range cases {
		if got := MustParseVersion(c.a).Compare(MustParseVersion(c.b)); got != c.want {
			t.Errorf("Compare(%s, %s) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
	for _, bad := range []string{"", "3.0.196", "3.0.196.0.1", "3.x.1.0", "3.0.-1.0"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) succeeded", bad)
		}
	}
	if s := MustParseVersion("3.3.987.0").String(); s != "3.3.987.0" {
		t.Errorf("String = %s", s)
	}
}
