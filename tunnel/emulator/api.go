package emulator

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// AWS JSON 1.1 (§2): POST /, X-Amz-Target AmazonSSM.<Op>, Content-Type application/x-amz-json-1.1.
const (
	jsonContentType = "application/x-amz-json-1.1"
	targetPrefix    = "AmazonSSM."
	maxRequestBody  = 1 << 20
)

// apiError is an AWS-shaped error: the SDK reads the code from X-Amzn-ErrorType (or __type) and the
// message from the body, and decides on retries from the code (ThrottlingException is retried).
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errTargetNotConnected(target string) *apiError {
	return &apiError{http.StatusBadRequest, "TargetNotConnected", target + " is not connected."}
}
func errInvalidDocument(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidDocument", msg}
}
func errInvalidParameters(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidParameters", msg}
}
func errValidation(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "ValidationException", msg}
}
func errThrottling() *apiError {
	return &apiError{http.StatusBadRequest, "ThrottlingException", "Rate exceeded"}
}

// writeJSON answers a successful call.
func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, &apiError{http.StatusInternalServerError, "InternalServerError", err.Error()})
		return
	}
	w.Header().Set("Content-Type", jsonContentType)
	w.Header().Set("X-Amzn-RequestId", uuid.NewString())
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// writeError answers with the error shape of AWS JSON 1.1 services.
func writeError(w http.ResponseWriter, e *apiError) {
	b, _ := json.Marshal(map[string]string{"__type": e.code, "message": e.message})
	w.Header().Set("Content-Type", jsonContentType)
	w.Header().Set("X-Amzn-RequestId", uuid.NewString())
	w.Header().Set("X-Amzn-ErrorType", e.code)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

// checkSignature checks that the request is SigV4-signed for service ssm: the presence and shape of the
// Authorization header and X-Amz-Date, not the cryptography (any access key works). It returns the access
// key ID, which names the caller.
func checkSignature(r *http.Request) (string, *apiError) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return "", &apiError{http.StatusForbidden, "MissingAuthenticationTokenException", "Missing Authentication Token"}
	}
	const algo = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(auth, algo) {
		return "", &apiError{http.StatusBadRequest, "IncompleteSignatureException", "Authorization header must use AWS4-HMAC-SHA256"}
	}
	var cred, signed, sig string
	for _, part := range strings.Split(strings.TrimPrefix(auth, algo), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			cred = v
		case "SignedHeaders":
			signed = v
		case "Signature":
			sig = v
		}
	}
	if cred == "" || signed == "" || sig == "" {
		return "", &apiError{http.StatusBadRequest, "IncompleteSignatureException", "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters"}
	}
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[0] == "" || scope[4] != "aws4_request" {
		return "", &apiError{http.StatusBadRequest, "IncompleteSignatureException", "Credential must be <access key>/<date>/<region>/ssm/aws4_request"}
	}
	if scope[3] != "ssm" {
		return "", &apiError{http.StatusBadRequest, "InvalidSignatureException", fmt.Sprintf("Credential should be scoped to correct service: 'ssm', not %q", scope[3])}
	}
	if r.Header.Get("X-Amz-Date") == "" && r.Header.Get("Date") == "" {
		return "", &apiError{http.StatusBadRequest, "IncompleteSignatureException", "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header"}
	}
	return scope[0], nil
}

// serveAPI is the SSM JSON 1.1 endpoint.
func (e *Emulator) serveAPI(w http.ResponseWriter, r *http.Request) {
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), targetPrefix)
	if !ok || op == "" {
		writeError(w, &apiError{http.StatusBadRequest, "UnknownOperationException", "X-Amz-Target must be AmazonSSM.<Operation>"})
		return
	}
	e.countCall(op)
	accessKey, aerr := checkSignature(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if e.deniedKey(accessKey) {
		writeError(w, &apiError{http.StatusBadRequest, "AccessDeniedException",
			fmt.Sprintf("User: arn:aws:iam::123456789012:user/%s is not authorized to perform: ssm:%s because no identity-based policy allows the ssm:%s action", accessKey, op, op)})
		return
	}
	if e.throttle() {
		writeError(w, errThrottling())
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil || len(body) > maxRequestBody {
		writeError(w, errValidation("request body unreadable or larger than 1 MiB"))
		return
	}
	var (
		out  any
		oerr *apiError
	)
	switch op {
	case "StartSession":
		var in startSessionInput
		if oerr = decodeInput(body, &in); oerr == nil {
			out, oerr = e.startSession(r, accessKey, in)
		}
	case "ResumeSession":
		var in sessionIDInput
		if oerr = decodeInput(body, &in); oerr == nil {
			out, oerr = e.resumeSession(r, in)
		}
	case "TerminateSession":
		var in sessionIDInput
		if oerr = decodeInput(body, &in); oerr == nil {
			out, oerr = e.terminateSession(in)
		}
	case "DescribeInstanceInformation":
		var in describeInput
		if oerr = decodeInput(body, &in); oerr == nil {
			out, oerr = e.describeInstances(in)
		}
	default:
		oerr = &apiError{http.StatusBadRequest, "UnknownOperationException", "Operation " + op + " is not emulated"}
	}
	if oerr != nil {
		e.log.Debug("API error", "op", op, "code", oerr.code, "message", oerr.message)
		writeError(w, oerr)
		return
	}
	writeJSON(w, out)
}

func decodeInput(body []byte, v any) *apiError {
	if len(body) == 0 {
		body = []byte("{}")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return &apiError{http.StatusBadRequest, "SerializationException", "request body is not valid JSON for this operation: " + err.Error()}
	}
	return nil
}

type startSessionInput struct {
	Target       string              `json:"Target"`
	DocumentName string              `json:"DocumentName"`
	Parameters   map[string][]string `json:"Parameters"`
	Reason       string              `json:"Reason"`
}

type sessionIDInput struct {
	SessionID string `json:"SessionId"`
}

type sessionOutput struct {
	SessionID  string `json:"SessionId"`
	TokenValue string `json:"TokenValue,omitempty"`
	StreamURL  string `json:"StreamUrl,omitempty"`
}

type terminateOutput struct {
	SessionID string `json:"SessionId"`
}

func (e *Emulator) startSession(r *http.Request, accessKey string, in startSessionInput) (any, *apiError) {
	if in.Target == "" {
		return nil, errValidation("1 validation error detected: Value null at 'target' failed to satisfy constraint: Member must not be null")
	}
	if len(in.Reason) > 256 {
		return nil, errValidation("Reason must be at most 256 characters")
	}
	props, err := resolveDocument(in.DocumentName, in.Parameters)
	if err != nil {
		var ae *apiError
		errors.As(err, &ae)
		return nil, ae
	}
	inst, ok := e.instance(in.Target)
	if !ok || inst.PingStatus != PingOnline {
		return nil, errTargetNotConnected(in.Target)
	}
	dests, derr := e.destinationsFor(inst)
	if derr != nil {
		return nil, &apiError{http.StatusInternalServerError, "InternalServerError", derr.Error()}
	}
	id := newSessionID(accessKey)
	s, serr := e.newSession(id, inst, in.DocumentName, props, dests, in.Reason)
	if serr != nil {
		return nil, &apiError{http.StatusInternalServerError, "InternalServerError", serr.Error()}
	}
	return sessionOutput{SessionID: id, TokenValue: s.currentToken(), StreamURL: streamURL(r, id)}, nil
}

func (e *Emulator) resumeSession(r *http.Request, in sessionIDInput) (any, *apiError) {
	if in.SessionID == "" {
		return nil, errValidation("SessionId is required")
	}
	s := e.session(in.SessionID)
	if s == nil {
		return nil, &apiError{http.StatusBadRequest, "DoesNotExistException", "Session " + in.SessionID + " does not exist"}
	}
	switch e.Faults().RefuseResume {
	case ResumeEmptyToken:
		// The session is gone, as after the service expired it: the client must start a fresh one (§10.3).
		s.end(OutputResumeRefused)
		e.stats.resumeRefused.Add(1)
		return sessionOutput{SessionID: in.SessionID}, nil
	case ResumeError:
		s.end(OutputResumeRefused)
		e.stats.resumeRefused.Add(1)
		return nil, &apiError{http.StatusBadRequest, "InvalidParameters", "Session " + in.SessionID + " cannot be resumed"}
	}
	tok, ok := s.resume()
	if !ok {
		// §2: a nil or empty token means the session is gone.
		return sessionOutput{SessionID: in.SessionID}, nil
	}
	e.stats.resumed.Add(1)
	return sessionOutput{SessionID: in.SessionID, TokenValue: tok, StreamURL: streamURL(r, in.SessionID)}, nil
}

func (e *Emulator) terminateSession(in sessionIDInput) (any, *apiError) {
	if in.SessionID == "" {
		return nil, errValidation("SessionId is required")
	}
	if s := e.session(in.SessionID); s != nil {
		s.end(OutputTerminated)
	}
	// The service answers TerminateSession for a finished or unknown session with its ID as well.
	return terminateOutput{SessionID: in.SessionID}, nil
}

type stringFilter struct {
	Key    string   `json:"Key"`
	Values []string `json:"Values"`
}

type legacyFilter struct {
	Key      string   `json:"key"`
	ValueSet []string `json:"valueSet"`
}

type describeInput struct {
	Filters                       []stringFilter `json:"Filters"`
	InstanceInformationFilterList []legacyFilter `json:"InstanceInformationFilterList"`
	MaxResults                    *int           `json:"MaxResults"`
	NextToken                     string         `json:"NextToken"`
}

type instanceInformation struct {
	InstanceID        string  `json:"InstanceId"`
	PingStatus        string  `json:"PingStatus"`
	LastPingDateTime  float64 `json:"LastPingDateTime"`
	AgentVersion      string  `json:"AgentVersion"`
	IsLatestVersion   bool    `json:"IsLatestVersion"`
	PlatformType      string  `json:"PlatformType"`
	PlatformName      string  `json:"PlatformName"`
	ResourceType      string  `json:"ResourceType"`
	ComputerName      string  `json:"ComputerName"`
	IPAddress         string  `json:"IPAddress"`
	AssociationStatus string  `json:"AssociationStatus,omitempty"`
}

type describeOutput struct {
	InstanceInformationList []instanceInformation `json:"InstanceInformationList"`
	NextToken               string                `json:"NextToken,omitempty"`
}

// describeInstances is DescribeInstanceInformation: filters by tag, tag-key, PingStatus, InstanceIds,
// ResourceType, PlatformTypes and AgentVersion, paginated by MaxResults (5–50, default 50) and an opaque
// NextToken.
func (e *Emulator) describeInstances(in describeInput) (any, *apiError) {
	filters := append([]stringFilter(nil), in.Filters...)
	for _, f := range in.InstanceInformationFilterList {
		key := f.Key
		switch key {
		case "InstanceIds", "AgentVersion", "PingStatus", "PlatformTypes", "ResourceType":
		default:
			return nil, &apiError{http.StatusBadRequest, "InvalidInstanceInformationFilterValue", "unsupported filter key " + key}
		}
		filters = append(filters, stringFilter{Key: key, Values: f.ValueSet})
	}
	for _, f := range filters {
		if len(f.Values) == 0 {
			return nil, &apiError{http.StatusBadRequest, "InvalidFilterKey", "filter " + f.Key + " needs at least one value"}
		}
		switch {
		case strings.HasPrefix(f.Key, "tag:") && len(f.Key) > 4, f.Key == "tag-key",
			f.Key == "PingStatus", f.Key == "InstanceIds", f.Key == "ResourceType", f.Key == "PlatformTypes",
			f.Key == "AgentVersion":
		default:
			return nil, &apiError{http.StatusBadRequest, "InvalidFilterKey", fmt.Sprintf("filter key %q is not supported (use tag:<key>, tag-key, PingStatus, InstanceIds, ResourceType, PlatformTypes or AgentVersion)", f.Key)}
		}
	}
	limit := 50
	if in.MaxResults != nil {
		if *in.MaxResults < 5 || *in.MaxResults > 50 {
			return nil, errValidation(fmt.Sprintf("1 validation error detected: Value '%d' at 'maxResults' failed to satisfy constraint: Member must have value between 5 and 50", *in.MaxResults))
		}
		limit = *in.MaxResults
	}
	offset := 0
	if in.NextToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(in.NextToken)
		n, cerr := strconv.Atoi(strings.TrimPrefix(string(b), "offset:"))
		if err != nil || cerr != nil || !strings.HasPrefix(string(b), "offset:") || n < 0 {
			return nil, &apiError{http.StatusBadRequest, "InvalidNextToken", "The specified token is not valid"}
		}
		offset = n
	}
	all := e.instances()
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	var matched []Instance
	for _, inst := range all {
		if matchesAll(inst, filters) {
			matched = append(matched, inst)
		}
	}
	out := describeOutput{InstanceInformationList: []instanceInformation{}}
	if offset > len(matched) {
		offset = len(matched)
	}
	end := min(offset+limit, len(matched))
	now := float64(time.Now().Unix())
	for i, inst := range matched[offset:end] {
		out.InstanceInformationList = append(out.InstanceInformationList, instanceInformation{
			InstanceID:       inst.ID,
			PingStatus:       inst.PingStatus,
			LastPingDateTime: now,
			AgentVersion:     inst.AgentVersion,
			IsLatestVersion:  inst.AgentVersion == DefaultAgentVersion,
			PlatformType:     inst.PlatformType,
			PlatformName:     "Emulated " + inst.PlatformType,
			ResourceType:     inst.ResourceType(),
			ComputerName:     inst.ID + ".emulated.internal",
			IPAddress:        fmt.Sprintf("10.0.%d.%d", (offset+i)/250, (offset+i)%250+4),
		})
	}
	if end < len(matched) {
		out.NextToken = base64.RawURLEncoding.EncodeToString([]byte("offset:" + strconv.Itoa(end)))
	}
	return out, nil
}

func matchesAll(in Instance, filters []stringFilter) bool {
	for _, f := range filters {
		if !matches(in, f) {
			return false
		}
	}
	return true
}

func matches(in Instance, f stringFilter) bool {
	var have []string
	switch {
	case strings.HasPrefix(f.Key, "tag:"):
		v, ok := in.Tags[strings.TrimPrefix(f.Key, "tag:")]
		if !ok {
			return false
		}
		have = []string{v}
	case f.Key == "tag-key":
		for k := range in.Tags {
			have = append(have, k)
		}
	case f.Key == "PingStatus":
		have = []string{in.PingStatus}
	case f.Key == "InstanceIds":
		have = []string{in.ID}
	case f.Key == "ResourceType":
		have = []string{in.ResourceType()}
	case f.Key == "PlatformTypes":
		have = []string{in.PlatformType}
	case f.Key == "AgentVersion":
		have = []string{in.AgentVersion}
	}
	for _, h := range have {
		for _, want := range f.Values {
			if h == want {
				return true
			}
		}
	}
	return false
}

// newSessionID has the service's shape, <caller>-<hex> (§2).
func newSessionID(caller string) string {
	var b [9]byte
	_, _ = rand.Read(b[:])
	if caller == "" {
		caller = "emulator"
	}
	return caller + "-" + hex.EncodeToString(b[:])[:17]
}

// newToken returns an opaque session token. The service's are short-lived and up to 300 characters.
func newToken() string {
	var b [96]byte
	_, _ = rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// streamURL is the data-channel URL of a session on the host the caller reached the API on, so it works
// through a Service name or a port-forward as well as on loopback. Like the real one (§2) it carries
// role=publish_subscribe and an opaque cell-number containing an unescaped '+', so a client that
// form-decodes the query fails here first rather than against AWS.
func streamURL(r *http.Request, sessionID string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	cell := base64.RawURLEncoding.EncodeToString(b[:6]) + "+" + base64.RawURLEncoding.EncodeToString(b[6:])
	return "ws://" + r.Host + dataChannelPath + sessionID + "?role=publish_subscribe&cell-number=" + cell
}
