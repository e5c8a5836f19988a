package emulator

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// dataChannelPath is the message gateway's data-channel path; the session ID follows (§1, §2).
const dataChannelPath = "/v1/data-channel/"

// openTimeout bounds the wait for the OpenDataChannel text frame after the upgrade.
const openTimeout = 45 * time.Second

// readLimit bounds one inbound websocket message: the largest data-channel frame plus headroom.
const readLimit = datachannel.MaxPayloadSizeLimit + 64<<10

var upgrader = websocket.Upgrader{
	// Like the service, accept any origin: clients are programs, not browsers.
	CheckOrigin:     func(*http.Request) bool { return true },
	ReadBufferSize:  64 << 10,
	WriteBufferSize: 64 << 10,
}

// serveDataChannel is the client side of the message gateway (§4.1, §11.2): upgrade, read the
// OpenDataChannel text frame, check its token against the session's current one (StartSession's or the last
// ResumeSession's), then relay until the websocket fails.
func (e *Emulator) serveDataChannel(w http.ResponseWriter, r *http.Request) {
	s := e.session(r.PathValue("id"))
	if s == nil {
		http.Error(w, "session not found", http.StatusNotFound)
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.log.Debug("Websocket upgrade failed", "err", err)
		return
	}
	ws.SetReadLimit(readLimit)
	_ = ws.SetReadDeadline(time.Now().Add(openTimeout))
	mt, data, err := ws.ReadMessage()
	if err != nil {
		s.log.Debug("No OpenDataChannel from the client", "err", err)
		_ = ws.Close()
		return
	}
	var in message.OpenDataChannelInput
	if mt != websocket.TextMessage || json.Unmarshal(data, &in) != nil {
		closePolicy(ws, "the first message must be the OpenDataChannel JSON text frame")
		return
	}
	if subtle.ConstantTimeCompare([]byte(in.TokenValue), []byte(s.currentToken())) != 1 {
		s.log.Warn("Rejected a data-channel open with an invalid token", "clientId", in.ClientID)
		closePolicy(ws, "invalid or expired token")
		return
	}
	_ = ws.SetReadDeadline(time.Time{})
	c := newClientConn(ws)
	if !s.attach(c, in) {
		// attach queued channel_closed; drain the client until the writer closes the websocket.
		drain(ws)
		c.kill()
		return
	}
	s.readClient(c)
	s.detach(c)
}

// closePolicy refuses a websocket with close 1008 and a reason the client can show.
func closePolicy(ws *websocket.Conn, reason string) {
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, reason), time.Now().Add(time.Second))
	_ = ws.Close()
}
