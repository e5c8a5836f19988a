package emulator

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"
)

const (
	testInstance   = "i-0123456789abcdef0"
	testAccessKey  = "AKIDEMULATORTEST"
	testRegion     = "eu-west-1"
	fastRetryDelay = 5 * time.Millisecond
)

// startEmulator starts an emulator for one test and closes it at the end.
func startEmulator(t *testing.T, cfg Config) *Emulator {
	t.Helper()
	if cfg.Instances == nil {
		cfg.Instances = []Instance{{ID: testInstance}}
	}
	e, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

// newClient is the real aws-sdk-go-v2 SSM client pointed at the emulator, with static credentials and a
// fast standard retryer (3 attempts) so throttling tests do not wait seconds.
func newClient(e *Emulator, creds aws.CredentialsProvider) *ssm.Client {
	if creds == nil {
		creds = credentials.NewStaticCredentialsProvider(testAccessKey, "secret", "")
	}
	cfg := aws.Config{Region: testRegion, Credentials: creds}
	return ssm.NewFromConfig(cfg, func(o *ssm.Options) {
		o.BaseEndpoint = aws.String(e.Endpoint())
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return fastRetryDelay, nil })
		})
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestStartSessionResolvesDocuments(t *testing.T) {
	e := startEmulator(t, Config{})
	c := newClient(e, nil)
	ctx := ctxT(t)
	cases := []struct {
		doc    string
		params map[string][]string
		want   map[string]string
	}{
		{DocPortForwarding, nil, map[string]string{"portNumber": "80", "localPortNumber": "0", "type": "LocalPortForwarding"}},
		{DocPortForwarding, map[string][]string{"portNumber": {"5432"}, "localPortNumber": {"15432"}},
			map[string]string{"portNumber": "5432", "localPortNumber": "15432", "type": "LocalPortForwarding"}},
		{DocPortForwardingToRemoteHost, map[string][]string{"host": {"db.internal"}, "portNumber": {"3306"}},
			map[string]string{"host": "db.internal", "portNumber": "3306", "localPortNumber": "0", "type": "LocalPortForwarding"}},
		{DocSSH, nil, map[string]string{"portNumber": "22"}},
	}
	for i, tc := range cases {
		reason := "case " + tc.doc
		out, err := c.StartSession(ctx, &ssm.StartSessionInput{Target: aws.String(testInstance), DocumentName: aws.String(tc.doc), Parameters: tc.params, Reason: aws.String(reason)})
		if err != nil {
			t.Fatalf("%d %s: StartSession: %v", i, tc.doc, err)
		}
		id := aws.ToString(out.SessionId)
		if !strings.HasPrefix(id, testAccessKey+"-") {
			t.Errorf("SessionId %q should be <caller>-<hex>", id)
		}
		if aws.ToString(out.TokenValue) == "" || len(aws.ToString(out.TokenValue)) > 300 {
			t.Errorf("TokenValue length %d, want 1..300", len(aws.ToString(out.TokenValue)))
		}
		wantURL := "ws://" + e.Addr() + "/v1/data-channel/" + id + "?role=publish_subscribe&cell-number="
		if u := aws.ToString(out.StreamUrl); !strings.HasPrefix(u, wantURL) || !strings.Contains(u[len(wantURL):], "+") {
			t.Errorf("StreamUrl %q, want prefix %q and a cell-number with '+'", u, wantURL)
		}
		info, ok := e.Session(id)
		if !ok {
			t.Fatalf("session %s unknown to the emulator", id)
		}
		if d := cmp.Diff(tc.want, info.Properties); d != "" {
			t.Errorf("%s properties (-want +got):\n%s", tc.doc, d)
		}
		if info.Reason != reason || info.Document != tc.doc || info.Target != testInstance {
			t.Errorf("session info %+v: want reason %q document %q target %q", info, reason, tc.doc, testInstance)
		}
	}
	st := e.Stats()
	if st.SessionsStarted != len(cases) || st.APICalls["StartSession"] != len(cases) || len(st.Reasons) != len(cases) || st.Reasons[2] != "case "+DocPortForwardingToRemoteHost {
		t.Errorf("stats %+v: want %d sessions, calls and reasons in order", st, len(cases))
	}
}

func TestAPIErrors(t *testing.T) {
	const lost = "mi-0123456789abcdef0"
	e := startEmulator(t, Config{Instances: []Instance{{ID: testInstance}, {ID: lost}}})
	if err := e.SetPingStatus(lost, PingConnectionLost); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	start := func(target, doc string, params map[string][]string) func(*ssm.Client) error {
		return func(c *ssm.Client) error {
			_, err := c.StartSession(ctx, &ssm.StartSessionInput{Target: aws.String(target), DocumentName: aws.String(doc), Parameters: params})
			return err
		}
	}
	cases := []struct {
		name   string
		faults Faults
		creds  aws.CredentialsProvider
		call   func(*ssm.Client) error
		code   string
		typed  func(error) bool
	}{
		{name: "unknown instance", call: start("i-0fffffffffffffff0", DocPortForwarding, nil), code: "TargetNotConnected",
			typed: func(err error) bool { var x *types.TargetNotConnected; return errors.As(err, &x) }},
		{name: "ConnectionLost instance", call: start(lost, DocPortForwarding, nil), code: "TargetNotConnected",
			typed: func(err error) bool { var x *types.TargetNotConnected; return errors.As(err, &x) }},
		{name: "unknown document", call: start(testInstance, "AWS-RunShellScript", nil), code: "InvalidDocument",
			typed: func(err error) bool { var x *types.InvalidDocument; return errors.As(err, &x) }},
		{name: "bad port", call: start(testInstance, DocPortForwarding, map[string][]string{"portNumber": {"0"}}), code: "InvalidParameters",
			typed: func(err error) bool { var x *types.InvalidParameters; return errors.As(err, &x) }},
		{name: "unknown parameter", call: start(testInstance, DocPortForwarding, map[string][]string{"host": {"x"}}), code: "InvalidParameters"},
		{name: "missing host", call: start(testInstance, DocPortForwardingToRemoteHost, nil), code: "InvalidParameters"},
		{name: "denied key", faults: Faults{DeniedAccessKeys: []string{testAccessKey}}, call: start(testInstance, DocPortForwarding, nil), code: "AccessDeniedException"},
		{name: "unsigned", creds: aws.AnonymousCredentials{}, call: start(testInstance, DocPortForwarding, nil), code: "MissingAuthenticationTokenException"},
		{name: "throttled beyond retries", faults: Faults{ThrottleFirst: 10}, call: start(testInstance, DocPortForwarding, nil), code: "ThrottlingException"},
		{name: "resume unknown", call: func(c *ssm.Client) error {
			_, err := c.ResumeSession(ctx, &ssm.ResumeSessionInput{SessionId: aws.String("nobody-0123")})
			return err
		}, code: "DoesNotExistException"},
		{name: "describe bad filter", call: func(c *ssm.Client) error {
			_, err := c.DescribeInstanceInformation(ctx, &ssm.DescribeInstanceInformationInput{Filters: []types.InstanceInformationStringFilter{{Key: aws.String("Colour"), Values: []string{"x"}}}})
			return err
		}, code: "InvalidFilterKey"},
		{name: "describe MaxResults", call: func(c *ssm.Client) error {
			_, err := c.DescribeInstanceInformation(ctx, &ssm.DescribeInstanceInformationInput{MaxResults: aws.Int32(2)})
			return err
		}, code: "ValidationException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := e.SetFaults(tc.faults); err != nil {
				t.Fatal(err)
			}
			err := tc.call(newClient(e, tc.creds))
			if got := errorCode(err); got != tc.code {
				t.Fatalf("error %v: code %q, want %q", err, got, tc.code)
			}
			if tc.typed != nil && !tc.typed(err) {
				t.Errorf("error %T %v is not the SDK's typed error", err, err)
			}
		})
	}
	if n := e.Stats().SessionsStarted; n != 0 {
		t.Errorf("%d sessions started by failing calls", n)
	}
}

func TestThrottlingIsRetriedBySDK(t *testing.T) {
	e := startEmulator(t, Config{Faults: Faults{ThrottleFirst: 2}})
	out, err := newClient(e, nil).StartSession(ctxT(t), &ssm.StartSessionInput{Target: aws.String(testInstance), DocumentName: aws.String(DocPortForwarding)})
	if err != nil {
		t.Fatalf("StartSession after 2 throttles: %v", err)
	}
	st := e.Stats()
	if st.APICalls["StartSession"] != 3 || st.Throttled != 2 || st.SessionsStarted != 1 || aws.ToString(out.SessionId) == "" {
		t.Errorf("stats %+v: want 3 attempts, 2 throttled, 1 session", st)
	}
}

func TestThrottleRate(t *testing.T) {
	e := startEmulator(t, Config{Faults: Faults{ThrottleRate: 1}})
	c := newClient(e, nil)
	c2 := ssm.NewFromConfig(aws.Config{Region: testRegion, Credentials: credentials.NewStaticCredentialsProvider(testAccessKey, "s", "")}, func(o *ssm.Options) {
		o.BaseEndpoint = aws.String(e.Endpoint())
		o.RetryMaxAttempts = 1
	})
	ctx := ctxT(t)
	if _, err := c.DescribeInstanceInformation(ctx, &ssm.DescribeInstanceInformationInput{}); err != nil {
		t.Fatalf("first call within the rate: %v", err)
	}
	_, err := c2.DescribeInstanceInformation(ctx, &ssm.DescribeInstanceInformationInput{})
	if errorCode(err) != "ThrottlingException" {
		t.Fatalf("immediate second call without retries: %v, want ThrottlingException", err)
	}
}

func TestRawSignatureChecks(t *testing.T) {
	e := startEmulator(t, Config{})
	cases := []struct {
		name, auth, date string
		status           int
		code             string
	}{
		{"no auth", "", "", http.StatusForbidden, "MissingAuthenticationTokenException"},
		{"wrong algorithm", "AWS4-HMAC-SHA512 Credential=a/b/c/ssm/aws4_request, SignedHeaders=host, Signature=00", "20260101T000000Z", http.StatusBadRequest, "IncompleteSignatureException"},
		{"wrong service", "AWS4-HMAC-SHA256 Credential=AK/20260101/eu-west-1/ec2/aws4_request, SignedHeaders=host, Signature=00", "20260101T000000Z", http.StatusBadRequest, "InvalidSignatureException"},
		{"no date", "AWS4-HMAC-SHA256 Credential=AK/20260101/eu-west-1/ssm/aws4_request, SignedHeaders=host, Signature=00", "", http.StatusBadRequest, "IncompleteSignatureException"},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(http.MethodPost, e.Endpoint()+"/", strings.NewReader(`{}`))
		req.Header.Set("Content-Type", jsonContentType)
		req.Header.Set("X-Amz-Target", "AmazonSSM.DescribeInstanceInformation")
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		if tc.date != "" {
			req.Header.Set("X-Amz-Date", tc.date)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("X-Amzn-ErrorType") != tc.code {
			t.Errorf("%s: %d %q, want %d %q", tc.name, resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType"), tc.status, tc.code)
		}
	}
}

func TestResumeAndTerminate(t *testing.T) {
	e := startEmulator(t, Config{})
	c := newClient(e, nil)
	ctx := ctxT(t)
	startOne := func() *ssm.StartSessionOutput {
		out, err := c.StartSession(ctx, &ssm.StartSessionInput{Target: aws.String(testInstance), DocumentName: aws.String(DocPortForwarding)})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	s1 := startOne()
	r, err := c.ResumeSession(ctx, &ssm.ResumeSessionInput{SessionId: s1.SessionId})
	if err != nil {
		t.Fatalf("ResumeSession: %v", err)
	}
	if aws.ToString(r.TokenValue) == "" || aws.ToString(r.TokenValue) == aws.ToString(s1.TokenValue) || aws.ToString(r.SessionId) != aws.ToString(s1.SessionId) {
		t.Errorf("resume gave token %q session %q: want a new token for the same session", aws.ToString(r.TokenValue), aws.ToString(r.SessionId))
	}
	if !strings.Contains(aws.ToString(r.StreamUrl), "/v1/data-channel/"+aws.ToString(s1.SessionId)+"?") {
		t.Errorf("resume StreamUrl %q", aws.ToString(r.StreamUrl))
	}
	tr, err := c.TerminateSession(ctx, &ssm.TerminateSessionInput{SessionId: s1.SessionId})
	if err != nil || aws.ToString(tr.SessionId) != aws.ToString(s1.SessionId) {
		t.Fatalf("TerminateSession: %v %v", tr, err)
	}
	if info, _ := e.Session(aws.ToString(s1.SessionId)); !info.Ended || info.Output != OutputTerminated {
		t.Errorf("after TerminateSession: %+v", info)
	}
	r, err = c.ResumeSession(ctx, &ssm.ResumeSessionInput{SessionId: s1.SessionId})
	if err != nil || aws.ToString(r.TokenValue) != "" || aws.ToString(r.StreamUrl) != "" {
		t.Errorf("resume of a terminated session: %+v %v, want no token", r, err)
	}

	// Refusal knobs end the session.
	if err := e.SetFaults(Faults{RefuseResume: ResumeEmptyToken}); err != nil {
		t.Fatal(err)
	}
	s2 := startOne()
	r, err = c.ResumeSession(ctx, &ssm.ResumeSessionInput{SessionId: s2.SessionId})
	if err != nil || aws.ToString(r.TokenValue) != "" {
		t.Errorf("refused resume: %+v %v, want no token", r, err)
	}
	if info, _ := e.Session(aws.ToString(s2.SessionId)); !info.Ended {
		t.Errorf("refused session still running: %+v", info)
	}
	if err := e.SetFaults(Faults{RefuseResume: ResumeError}); err != nil {
		t.Fatal(err)
	}
	s3 := startOne()
	if _, err = c.ResumeSession(ctx, &ssm.ResumeSessionInput{SessionId: s3.SessionId}); errorCode(err) != "InvalidParameters" {
		t.Errorf("refused resume with error: %v", err)
	}
	st := e.Stats()
	if st.SessionsStarted != 3 || st.SessionsResumed != 1 || st.ResumesRefused != 2 || st.SessionsTerminated != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestDescribeInstanceInformation(t *testing.T) {
	var instances []Instance
	for i, id := range []string{
		"i-00000001", "i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c", "i-0000000000000000d",
		"i-0000000000000000e", "i-0000000000000000f", "mi-00000000000000001", "mi-00000000000000002",
		"i-0000000000000001a", "i-0000000000000001b", "i-0000000000000001c",
	} {
		env := "prod"
		if i%2 == 0 {
			env = "dev"
		}
		instances = append(instances, Instance{ID: id, Tags: map[string]string{"env": env, "team": "t" + id[len(id)-1:]}})
	}
	instances[3].AgentVersion = BasicAgentVersion
	e := startEmulator(t, Config{Instances: instances})
	if err := e.SetPingStatus("i-0000000000000000a", PingConnectionLost); err != nil {
		t.Fatal(err)
	}
	c := newClient(e, nil)
	ctx := ctxT(t)
	list := func(in *ssm.DescribeInstanceInformationInput) ([]types.InstanceInformation, int) {
		t.Helper()
		p := ssm.NewDescribeInstanceInformationPaginator(c, in)
		var all []types.InstanceInformation
		pages := 0
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				t.Fatalf("page %d: %v", pages, err)
			}
			pages++
			all = append(all, out.InstanceInformationList...)
		}
		return all, pages
	}
	all, pages := list(&ssm.DescribeInstanceInformationInput{MaxResults: aws.Int32(5)})
	if len(all) != 12 || pages != 3 {
		t.Fatalf("got %d instances in %d pages, want 12 in 3", len(all), pages)
	}
	seen := map[string]bool{}
	for _, in := range all {
		id := aws.ToString(in.InstanceId)
		if seen[id] {
			t.Errorf("%s listed twice across pages", id)
		}
		seen[id] = true
		wantType := types.ResourceTypeEc2Instance
		if strings.HasPrefix(id, "mi-") {
			wantType = types.ResourceTypeManagedInstance
		}
		if in.ResourceType != wantType || in.PlatformType != types.PlatformTypeLinux || aws.ToString(in.AgentVersion) == "" {
			t.Errorf("%s: resource type %q platform %q agent %q", id, in.ResourceType, in.PlatformType, aws.ToString(in.AgentVersion))
		}
		if id == "i-0000000000000000c" && aws.ToString(in.AgentVersion) != BasicAgentVersion {
			t.Errorf("%s agent %q, want %s", id, aws.ToString(in.AgentVersion), BasicAgentVersion)
		}
		if want := types.PingStatusOnline; id == "i-0000000000000000a" {
			if in.PingStatus != types.PingStatusConnectionLost {
				t.Errorf("%s ping %q, want ConnectionLost", id, in.PingStatus)
			}
		} else if in.PingStatus != want {
			t.Errorf("%s ping %q, want Online", id, in.PingStatus)
		}
	}
	dev, _ := list(&ssm.DescribeInstanceInformationInput{Filters: []types.InstanceInformationStringFilter{{Key: aws.String("tag:env"), Values: []string{"dev"}}}})
	if len(dev) != 6 {
		t.Errorf("tag:env=dev matched %d, want 6", len(dev))
	}
	for _, in := range dev {
		if e.mustInstance(t, aws.ToString(in.InstanceId)).Tags["env"] != "dev" {
			t.Errorf("%s does not have env=dev", aws.ToString(in.InstanceId))
		}
	}
	online, _ := list(&ssm.DescribeInstanceInformationInput{Filters: []types.InstanceInformationStringFilter{
		{Key: aws.String("tag:env"), Values: []string{"dev", "prod"}},
		{Key: aws.String("PingStatus"), Values: []string{"Online"}},
	}})
	if len(online) != 11 {
		t.Errorf("Online matched %d, want 11", len(online))
	}
	ids, _ := list(&ssm.DescribeInstanceInformationInput{Filters: []types.InstanceInformationStringFilter{
		{Key: aws.String("InstanceIds"), Values: []string{"mi-00000000000000002", "i-00000001", "i-0ffffffffffffffff"}},
	}})
	if len(ids) != 2 || aws.ToString(ids[0].InstanceId) != "i-00000001" || aws.ToString(ids[1].InstanceId) != "mi-00000000000000002" {
		t.Errorf("InstanceIds filter: %d results", len(ids))
	}
	none, _ := list(&ssm.DescribeInstanceInformationInput{Filters: []types.InstanceInformationStringFilter{{Key: aws.String("tag:missing"), Values: []string{"x"}}}})
	if len(none) != 0 {
		t.Errorf("tag:missing matched %d", len(none))
	}
	if _, err := c.DescribeInstanceInformation(ctx, &ssm.DescribeInstanceInformationInput{NextToken: aws.String("garbage")}); errorCode(err) != "InvalidNextToken" {
		t.Errorf("bad NextToken: %v", err)
	}
}

func (e *Emulator) mustInstance(t *testing.T, id string) Instance {
	in, ok := e.instance(id)
	if !ok {
		t.Fatalf("unknown instance %s", id)
	}
	return in
}

func TestConfigValidation(t *testing.T) {
	bad := []Config{
		{Instances: []Instance{{ID: "i-123"}}},
		{Instances: []Instance{{ID: "mi-0123456789abcdef"}}},
		{Instances: []Instance{{ID: "i-0123456789ABCDEF0"}}},
		{Instances: []Instance{{ID: testInstance}, {ID: testInstance}}},
		{Instances: []Instance{{ID: testInstance, AgentVersion: "3.3"}}},
		{Instances: []Instance{{ID: testInstance, PingStatus: "Sleeping"}}},
		{Pacing: "fast"},
		{AllowedDestinations: []string{"10.0.0.0/33"}},
		{Faults: Faults{IdleTimeout: -1}},
	}
	for i, cfg := range bad {
		if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%d: Validate() = %v, want ErrInvalidConfig", i, err)
		}
	}
	good := Config{Instances: []Instance{{ID: "i-01234567"}, {ID: "mi-0123456789abcdef0", AgentVersion: BasicAgentVersion}}, AllowedDestinations: []string{"any"}}
	if err := good.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}
