package emulator

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzAPI feeds arbitrary operations, bodies and Authorization headers to the JSON 1.1 endpoint: it never
// panics, and every answer is JSON, with X-Amzn-ErrorType on every error.
func FuzzAPI(f *testing.F) {
	auth := "AWS4-HMAC-SHA256 Credential=AK/20260101/eu-west-1/ssm/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
	f.Add("StartSession", `{"Target":"i-0123456789abcdef0","DocumentName":"AWS-StartPortForwardingSession","Parameters":{"portNumber":["22"]}}`, auth)
	f.Add("StartSession", `{"Target":"i-0123456789abcdef0","DocumentName":"AWS-StartPortForwardingSessionToRemoteHost","Parameters":{"host":[]}}`, auth)
	f.Add("DescribeInstanceInformation", `{"Filters":[{"Key":"tag:env","Values":["dev"]}],"MaxResults":5,"NextToken":"b2Zmc2V0OjU"}`, auth)
	f.Add("ResumeSession", `{"SessionId":"x"}`, auth)
	f.Add("TerminateSession", `[]`, "AWS4-HMAC-SHA256 Credential=/")
	f.Add("Nope", `{`, "")
	e, err := Start(Config{Instances: []Instance{{ID: testInstance}}, Pacing: PacingNone})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = e.Close() })
	h := e.Handler()
	f.Fuzz(func(t *testing.T, op, body, authz string) {
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		req.Header.Set("X-Amz-Target", "AmazonSSM."+op)
		req.Header.Set("Content-Type", jsonContentType)
		req.Header.Set("Authorization", authz)
		req.Header.Set("X-Amz-Date", "20260101T000000Z")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%d answer is not JSON: %q", rec.Code, rec.Body.String())
		}
		if rec.Code != http.StatusOK && rec.Header().Get("X-Amzn-ErrorType") == "" {
			t.Fatalf("error %d without X-Amzn-ErrorType", rec.Code)
		}
		var out sessionOutput
		if rec.Code == http.StatusOK && op == "StartSession" {
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.TokenValue == "" {
				t.Fatalf("StartSession succeeded without a token: %s", rec.Body.String())
			}
			_ = e.TerminateSession(out.SessionID)
		}
	})
}
