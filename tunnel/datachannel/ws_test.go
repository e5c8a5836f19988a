package datachannel

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/gorilla/websocket"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

func wsURL(srv *httptest.Server, path string) string {
	return "ws" + strings.TrimPrefix(srv.URL, "http") + path
}

// hostileFrames are frames a broken or malicious gateway might send (§5).
func hostileFrames(t testing.TB) map[string][]byte {
	valid := func(typ message.MessageType, pl []byte) []byte {
		m := message.Message{Type: typ, SchemaVersion: 1, CreatedDate: 1, MessageID: message.NewID(), PayloadType: 1, Payload: pl}
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	badHL := valid(message.OutputStreamData, []byte("x"))
	binary.BigEndian.PutUint32(badHL[0:], 0xffffffff)
	pastEnd := valid(message.OutputStreamData, []byte("0123456789"))
	binary.BigEndian.PutUint32(pastEnd[116:], 1000)
	gib := valid(message.OutputStreamData, nil)
	binary.BigEndian.PutUint32(gib[116:], 1<<30)
	digest := valid(message.OutputStreamData, []byte("payload"))
	digest[80] ^= 0xff
	badAck := valid(message.Acknowledge, []byte(`{"AcknowledgedMessageSequenceNumber":"nope"`))
	return map[string][]byte{
		"bad header length":         badHL,
		"payload length past frame": pastEnd,
		"1 GiB claimed length":      gib,
		"digest mismatch":           digest,
		"short frame":               []byte{0, 0, 0, 116, 'x'},
		"bad ack json":              badAck,
		"unknown type":              valid("evil_type", []byte("x")),
		"own data type":             valid(message.InputStreamData, []byte("x")),
	}
}

// TestHostileServer: a gateway sending malformed frames, a 1 GiB claimed payload and a 1 GiB websocket
// message never crashes the client, never makes it allocate what the frames claim, and only the oversized
// websocket message fails the transport (the owner may resume).
func TestHostileServer(t *testing.T) {
	frames := hostileFrames(t)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		if _, _, err := conn.ReadMessage(); err != nil {
			return
		}
		_ = conn.WriteMessage(websocket.TextMessage, []byte("text frames are ignored"))
		for _, f := range frames {
			_ = conn.WriteMessage(websocket.BinaryMessage, f)
		}
		ok := message.Message{Type: message.OutputStreamData, SchemaVersion: 1, CreatedDate: 1, MessageID: message.NewID(), PayloadType: 1, Payload: []byte("still alive")}
		b, _ := ok.MarshalBinary()
		_ = conn.WriteMessage(websocket.BinaryMessage, b)
		<-release
		// A websocket frame header claiming a 1 GiB binary message, and no body.
		hdr := []byte{0x82, 127, 0, 0, 0, 0, 0x40, 0, 0, 0}
		_, _ = conn.NetConn().Write(hdr)
		<-r.Context().Done()
	}))
	defer srv.Close()
	defer close(release)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	ch := mustNew(t, Config{Role: RoleClient})
	tr, err := DialClient(context.Background(), wsURL(srv, "/v1/data-channel/s"), "tok", "cid", DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ch.Attach(tr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, p, err := ch.Receive(ctx)
	if err != nil || string(p) != "still alive" {
		t.Fatalf("Receive = %q, %v", p, err)
	}
	s := ch.Stats()
	if s.BadFrames != 6 || s.UnknownFrames != 2 {
		t.Fatalf("bad %d unknown %d, want 6 and 2 (%+v)", s.BadFrames, s.UnknownFrames, s)
	}
	release <- struct{}{}
	select {
	case err := <-ch.TransportFailed():
		if !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("transport failed with %v, want ErrFrameTooLarge", err)
		}
	case <-ctx.Done():
		t.Fatal("oversized message did not fail the transport")
	}
	if ch.Err() != nil {
		t.Fatalf("channel ended: %v", ch.Err())
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 64<<20 {
		t.Fatalf("allocated %d MiB while frames claimed 1 GiB", d>>20)
	} else {
		t.Logf("total allocation during the hostile exchange: %d KiB", d>>10)
	}
}

func TestDialClientSigning(t *testing.T) {
	type seen struct {
		auth, date, token string
		open              message.OpenDataChannelInput
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seen{auth: r.Header.Get("Authorization"), date: r.Header.Get("X-Amz-Date"), token: r.Header.Get("X-Amz-Security-Token")}
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		_, b, err := conn.ReadMessage()
		if err == nil {
			_ = json.Unmarshal(b, &s.open)
		}
		got <- s
	}))
	defer srv.Close()
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "secret", SessionToken: "sess"}, nil
	})
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tr, err := DialClient(ctx, wsURL(srv, "/v1/data-channel/s-1?role=publish_subscribe&cell-number=AB+c"), "secret-token", "cid-1",
		DialOptions{Credentials: creds, Region: "eu-west-1", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	s := <-got
	if !strings.HasPrefix(s.auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260102/eu-west-1/ssmmessages/aws4_request") ||
		s.date != "20260102T030405Z" || s.token != "sess" {
		t.Fatalf("upgrade not signed as §4.1 requires: %+v", s)
	}
	if s.open.MessageSchemaVersion != "1.0" || s.open.TokenValue != "secret-token" || s.open.ClientID != "cid-1" ||
		s.open.ClientVersion != ClientVersion || len(s.open.RequestID) != 36 {
		t.Fatalf("OpenDataChannel %+v", s.open)
	}
	// Presigned URLs are not signed again.
	tr2, err := DialClient(ctx, wsURL(srv, "/v1/data-channel/s-1?X-Amz-Signature=abc"), "t", "cid-1", DialOptions{Credentials: creds, Region: "eu-west-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	if s := <-got; s.auth != "" {
		t.Fatalf("presigned URL was signed: %q", s.auth)
	}
	if _, err := DialClient(ctx, "https://example.invalid/x", "t", "c", DialOptions{}); !errors.Is(err, ErrStreamURL) {
		t.Fatalf("https URL: %v, want ErrStreamURL", err)
	}
	if ClientVersion <= "1.2.331.0" || message.MustParseVersion(ClientVersion).Compare(message.ClientKeepAliveOffAbove) <= 0 {
		t.Fatalf("ClientVersion %s must be above 1.2.331.0 (§9.2)", ClientVersion)
	}
}

// TestDeadLinkDetected: a gateway that stops reading (so never answers pings) is noticed within the pong
// timeout, not never (aws/session-manager-plugin#47).
func TestDeadLinkDetected(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		_, _, _ = conn.ReadMessage()
		<-stop // no more reads: pings are never answered
	}))
	defer srv.Close()
	ch := mustNew(t, Config{Role: RoleClient})
	tr, err := DialClient(context.Background(), wsURL(srv, "/x"), "t", "c",
		DialOptions{Websocket: WebsocketOptions{PingInterval: 50 * time.Millisecond, PongTimeout: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ch.Attach(tr)
	select {
	case err := <-ch.TransportFailed():
		if !strings.Contains(err.Error(), "nothing received") {
			t.Fatalf("unexpected failure %v", err)
		}
		t.Logf("dead link noticed after %v: %v", time.Since(start), err)
	case <-time.After(10 * time.Second):
		t.Fatal("dead link not noticed")
	}
}

func TestClientHandshake(t *testing.T) {
	props := message.PortParameters{PortNumber: "80", LocalPortNumber: "0", Type: message.LocalPortForwarding}
	request := func(version string, actions ...message.RequestedClientAction) []byte {
		b, _ := json.Marshal(message.HandshakeRequest{AgentVersion: version, RequestedClientActions: actions})
		return b
	}
	portAction := func(st string) message.RequestedClientAction {
		p, _ := json.Marshal(message.SessionTypeRequest{SessionType: st, Properties: props})
		return message.RequestedClientAction{ActionType: message.ActionSessionType, ActionParameters: p}
	}
	readResponse := func(peer *rawPeer) message.HandshakeResponse {
		for {
			m := peer.read()
			if m.Type == message.Acknowledge {
				continue
			}
			if m.PayloadType != message.PayloadHandshakeResponse {
				t.Fatalf("got %s", m.PayloadType)
			}
			peer.ack(m)
			var r message.HandshakeResponse
			if err := json.Unmarshal(m.Payload, &r); err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("port", func(t *testing.T) {
		ch, peer := rawPair(t, Config{Role: RoleClient})
		type result struct {
			r   HandshakeResult
			err error
		}
		done := make(chan result, 1)
		go func() { r, err := ClientHandshake(ctx, ch, ""); done <- result{r, err} }()
		peer.sendData(0, message.PayloadHandshakeRequest, request("3.3.987.0", portAction("Port")))
		resp := readResponse(peer)
		if resp.ClientVersion != ClientVersion || len(resp.ProcessedClientActions) != 1 || resp.ProcessedClientActions[0].ActionStatus != message.ActionSuccess {
			t.Fatalf("response %+v", resp)
		}
		hc, _ := json.Marshal(message.HandshakeComplete{HandshakeTimeToComplete: 1500 * time.Millisecond, CustomerMessage: "hello"})
		peer.sendData(1, message.PayloadHandshakeComplete, hc)
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.r.AgentVersion != message.MustParseVersion("3.3.987.0") || r.r.Properties != props || r.r.CustomerMessage != "hello" ||
			r.r.HandshakeTimeToComplete != 1500*time.Millisecond || r.r.SessionType != "Port" {
			t.Fatalf("result %+v", r.r)
		}
	})
	t.Run("unknown action", func(t *testing.T) {
		ch, peer := rawPair(t, Config{Role: RoleClient})
		errc := make(chan error, 1)
		go func() { _, err := ClientHandshake(ctx, ch, "1.2.999.0"); errc <- err }()
		peer.sendData(0, message.PayloadHandshakeRequest, request("3.3.987.0", portAction("Port"),
			message.RequestedClientAction{ActionType: "Teleport", ActionParameters: json.RawMessage(`{}`)}))
		resp := readResponse(peer)
		if resp.ClientVersion != "1.2.999.0" || len(resp.ProcessedClientActions) != 2 ||
			resp.ProcessedClientActions[1].ActionStatus != message.ActionUnsupported || resp.ProcessedClientActions[1].Error == "" {
			t.Fatalf("response %+v: the unknown action must have ActionStatus 3 (§8.3)", resp)
		}
		if err := <-errc; !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), "Teleport") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("malformed agent version", func(t *testing.T) {
		ch, peer := rawPair(t, Config{Role: RoleClient})
		peer.sendData(0, message.PayloadHandshakeRequest, request("3.3", portAction("Port")))
		if _, err := ClientHandshake(ctx, ch, ""); !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), "four numeric parts") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("shell session type", func(t *testing.T) {
		ch, peer := rawPair(t, Config{Role: RoleClient})
		errc := make(chan error, 1)
		go func() { _, err := ClientHandshake(ctx, ch, ""); errc <- err }()
		peer.sendData(0, message.PayloadHandshakeRequest, request("3.3.987.0", portAction("Standard_Stream")))
		if resp := readResponse(peer); resp.ProcessedClientActions[0].ActionStatus != message.ActionFailed {
			t.Fatalf("response %+v", resp)
		}
		if err := <-errc; !errors.Is(err, ErrHandshake) {
			t.Fatalf("err %v", err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no role":          {},
		"huge payload":     {Role: RoleClient, MaxPayloadSize: MaxPayloadSizeLimit + 1},
		"negative rate":    {Role: RoleClient, Rate: -1},
		"burst too small":  {Role: RoleClient, Rate: 1000, Burst: 10},
		"window too small": {Role: RoleClient, MaxInFlightBytes: 100},
	} {
		if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Validate() = %v, want ErrInvalidConfig", name, err)
		}
	}
	if err := (Config{Role: RoleAgent, Rate: DefaultRate}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestServerCloseBye: the gateway's hourly "close 1000 Bye" (§10.3) fails the transport, not the channel,
// so the owner can resume.
func TestServerCloseBye(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		_, _, _ = conn.ReadMessage()
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "Bye"), time.Now().Add(time.Second))
		_, _, _ = conn.ReadMessage() // until the client closes
	}))
	defer srv.Close()
	ch := mustNew(t, Config{Role: RoleClient})
	tr, err := DialClient(context.Background(), wsURL(srv, "/x"), "t", "c", DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ch.Attach(tr)
	select {
	case err := <-ch.TransportFailed():
		if !websocket.IsCloseError(errors.Unwrap(err), websocket.CloseNormalClosure) {
			t.Fatalf("transport failed with %v, want close 1000", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("close frame not noticed")
	}
	if ch.Err() != nil {
		t.Fatalf("channel ended: %v", ch.Err())
	}
	// Frames sent while detached are delivered after Attach.
	if err := ch.Send(context.Background(), message.PayloadOutput, []byte("queued")); err != nil {
		t.Fatal(err)
	}
	x, y := Pipe(0)
	ch.Attach(x)
	peer := &rawPeer{t: t, tr: y, typ: message.OutputStreamData}
	if m := peer.read(); string(m.Payload) != "queued" || m.SequenceNumber != 0 {
		t.Fatalf("after re-attach got seq %d %q", m.SequenceNumber, m.Payload)
	}
}
