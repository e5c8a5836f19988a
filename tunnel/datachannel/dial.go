package datachannel

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/gorilla/websocket"
)

// ClientVersion is the version this client reports in OpenDataChannel and the HandshakeResponse. It must be
// a real four-part version above 1.2.331.0, so that the agent disables smux keepalive in step with us
// (§9.2); a source build of the plugin reporting 1.2.0.0 is what caused issue #93.
const ClientVersion = "1.2.764.0"

// DialOptions configures DialClient.
type DialOptions struct {
	// Credentials, when set, SigV4-sign the upgrade request (service "ssmmessages", Region), as plugin
	// 1.2.764+ does (§4.1). Signing is skipped for presigned URLs. Nil means unsigned.
	Credentials aws.CredentialsProvider
	// Region is the signing region; required with Credentials.
	Region string
	// ClientVersion reported in OpenDataChannel. Default ClientVersion.
	ClientVersion string
	// Dialer is the websocket dialer. Default: a dialer with the environment's proxy and a 45 s handshake
	// timeout, like the plugin (§4.1).
	Dialer *websocket.Dialer
	// Header is added to the upgrade request (e.g. User-Agent).
	Header http.Header
	// Websocket tunes the returned transport.
	Websocket WebsocketOptions
	// Logger for debug logs; the token is never logged. Default: discard.
	Logger *slog.Logger
}

// DialClient opens the client's data-channel websocket to streamURL (ws:// or wss://), signs the upgrade
// when credentials are given, and sends the OpenDataChannel text frame with a fresh RequestId, token,
// clientID (stable for the life of the process, reused on resume) and ClientVersion (§4.1). The returned
// Transport is ready to Attach.
func DialClient(ctx context.Context, streamURL, token, clientID string, opts DialOptions) (Transport, error) {
	return nil, errNotImplemented
}
