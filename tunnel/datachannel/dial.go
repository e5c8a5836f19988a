package datachannel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// ClientVersion is the version this client reports in OpenDataChannel and the HandshakeResponse. It must be
// a real four-part version above 1.2.331.0, so that the agent disables smux keepalive in step with us
// (§9.2; 1.2.764.0 is the first release that signs the upgrade, as we do); a source build of the plugin
// reports 1.2.0.0, which leaves the agent's keepalive on while the plugin disables its own
// (aws/session-manager-plugin#93).
const ClientVersion = "1.2.764.0"

// SigningService is the SigV4 service name of the message gateway (§4.1).
const SigningService = "ssmmessages"

// emptyPayloadHash is the SHA-256 of an empty body, the payload hash of a GET upgrade request.
const emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// DefaultHandshakeTimeout is the websocket opening-handshake timeout of the plugin's dialer (§4.1).
const DefaultHandshakeTimeout = 45 * time.Second

// ErrStreamURL is returned for a StreamUrl that is not a ws:// or wss:// URL.
var ErrStreamURL = errors.New("datachannel: invalid stream URL")

// DialOptions configures DialClient.
type DialOptions struct {
	// Credentials, when set, SigV4-sign the upgrade request (service "ssmmessages", Region), as plugin
	// 1.2.764+ does (§4.1). Signing is skipped for presigned URLs. Nil means unsigned.
	Credentials aws.CredentialsProvider
	// Region is the signing region; required with Credentials.
	Region string
	// ClientVersion reported in OpenDataChannel. Default ClientVersion.
	ClientVersion string
	// Dialer is the websocket dialer. Default: the environment's proxy and a 45 s handshake timeout, like the
	// plugin (§4.1).
	Dialer *websocket.Dialer
	// Header is added to the upgrade request (e.g. User-Agent).
	Header http.Header
	// Websocket tunes the returned transport.
	Websocket WebsocketOptions
	// Logger for debug logs; the token is never logged. Default: discard.
	Logger *slog.Logger
	// Now is the signing clock. Default time.Now.
	Now func() time.Time
}

// wsBufferSize is the websocket connection's read and write buffer: it holds a whole data frame of the
// largest default payloads, so a frame leaves in one websocket fragment and one write(2). gorilla's 4 KiB
// default would send a fragment and a write(2) per 4 KiB of it.
const wsBufferSize = 64 << 10

// DialClient opens the client's data-channel websocket to streamURL (ws:// or wss://), signs the upgrade
// when credentials are given, and sends the OpenDataChannel text frame with a fresh RequestId, token,
// clientID (stable for the life of the process, reused on resume) and ClientVersion (§4.1). The returned
// Transport is ready to Attach.
func DialClient(ctx context.Context, streamURL, token, clientID string, opts DialOptions) (Transport, error) {
	u, err := url.Parse(streamURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStreamURL, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return nil, fmt.Errorf("%w: scheme %q must be ws or wss", ErrStreamURL, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w: no host in %q", ErrStreamURL, redactURL(u))
	}
	if opts.ClientVersion == "" {
		opts.ClientVersion = ClientVersion
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	dialer := opts.Dialer
	if dialer == nil {
		dialer = &websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: DefaultHandshakeTimeout,
			ReadBufferSize: wsBufferSize, WriteBufferSize: wsBufferSize}
	}
	header := opts.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	if opts.Credentials != nil && !isPresigned(u.RawQuery) {
		if opts.Region == "" {
			return nil, errors.New("datachannel: Region is required to sign the websocket upgrade")
		}
		if err := signUpgrade(ctx, u, header, opts.Credentials, opts.Region, opts.Now()); err != nil {
			return nil, err
		}
	}

	conn, resp, err := dialer.DialContext(ctx, u.String(), header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("datachannel: websocket upgrade to %s refused: HTTP %s: %w", redactURL(u), resp.Status, err)
		}
		return nil, fmt.Errorf("datachannel: dial %s: %w", redactURL(u), err)
	}
	open, err := json.Marshal(message.OpenDataChannelInput{
		MessageSchemaVersion: "1.0",
		RequestID:            uuid.NewString(),
		TokenValue:           token,
		ClientID:             clientID,
		ClientVersion:        opts.ClientVersion,
	})
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("datachannel: encode OpenDataChannel: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetWriteDeadline(dl)
	}
	if err := conn.WriteMessage(websocket.TextMessage, open); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("datachannel: send OpenDataChannel: %w", err)
	}
	opts.Logger.Debug("Data channel opened", "url", redactURL(u), "clientId", clientID, "clientVersion", opts.ClientVersion)
	ws := opts.Websocket
	if ws.Logger == nil {
		ws.Logger = opts.Logger
	}
	return NewWebsocketTransport(conn, ws), nil
}

// signUpgrade adds SigV4 headers (Authorization, X-Amz-Date, X-Amz-Security-Token) for a GET of u with an
// empty body, service ssmmessages (§4.1).
func signUpgrade(ctx context.Context, u *url.URL, header http.Header, provider aws.CredentialsProvider, region string, now time.Time) error {
	creds, err := provider.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("datachannel: load credentials to sign the websocket upgrade: %w", err)
	}
	su := *u
	if su.Scheme == "wss" {
		su.Scheme = "https"
	} else {
		su.Scheme = "http"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, su.String(), nil)
	if err != nil {
		return fmt.Errorf("datachannel: build upgrade request to sign: %w", err)
	}
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, emptyPayloadHash, SigningService, region, now); err != nil {
		return fmt.Errorf("datachannel: sign websocket upgrade: %w", err)
	}
	for _, k := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token"} {
		if v := req.Header.Get(k); v != "" {
			header.Set(k, v)
		}
	}
	return nil
}

// presignKeys are the query parameters that mark a presigned URL, which must not be signed again (§4.1).
var presignKeys = []string{"x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-expires",
	"x-amz-signedheaders", "x-amz-signature", "x-amz-security-token"}

// isPresigned inspects the raw query without form-decoding it: cell-number may hold a literal '+' (§2).
func isPresigned(rawQuery string) bool {
	for part := range strings.SplitSeq(rawQuery, "&") {
		key, _, _ := strings.Cut(part, "=")
		for _, k := range presignKeys {
			if strings.EqualFold(key, k) {
				return true
			}
		}
	}
	return false
}

// redactURL drops the query (which may carry presigned credentials) for logs and errors.
func redactURL(u *url.URL) string {
	r := *u
	r.RawQuery = ""
	r.User = nil
	return r.String()
}
