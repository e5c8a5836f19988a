package session

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"
)

func TestSpecValidate(t *testing.T) {
	good := []Spec{
		{Target: "i-0123456789abcdef0", RemotePort: 80},
		{Target: "i-01234567", RemotePort: 65535},
		{Target: "mi-0123456789abcdef0", RemotePort: 22, RemoteHost: "db.internal", Reason: "ssmtunnel/dev pod ns/x"},
		{Target: "ecs:cluster_0123456789abcdef0123456789abcdef_0123456789abcdef0123456789abcdef-1234567890", RemotePort: 5432},
		{Target: "i-0123456789abcdef0", RemotePort: 80, Document: "My-Port-Doc"},
	}
	for _, s := range good {
		if err := s.Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", s, err)
		}
	}
	bad := []struct {
		spec Spec
		want error
	}{
		{Spec{Target: "i-xyz", RemotePort: 80}, ErrBadTarget},
		{Spec{Target: "I-0123456789ABCDEF0", RemotePort: 80}, ErrBadTarget},
		{Spec{Target: "", RemotePort: 80}, ErrBadTarget},
		{Spec{Target: "i-0123456789abcdef0", RemotePort: 80, Reason: "two\nlines"}, ErrBadReason},
		{Spec{Target: "i-0123456789abcdef0", RemotePort: 80, Reason: strings.Repeat("x", 257)}, ErrBadReason},
		{Spec{Target: "i-0123456789abcdef0", RemotePort: 80, Document: "a b"}, ErrBadDocument},
	}
	for _, b := range bad {
		if err := b.spec.Validate(); !errors.Is(err, b.want) {
			t.Errorf("Validate(%+v) = %v, want %v", b.spec, err, b.want)
		}
	}
	if err := (Spec{Target: "i-0123456789abcdef0", RemotePort: 0}).Validate(); err == nil {
		t.Error("port 0 accepted")
	}
}

func TestStartInput(t *testing.T) {
	in := Spec{Target: "i-0123456789abcdef0", RemotePort: 5432, RemoteHost: "db", Reason: "r"}.StartInput()
	if aws.ToString(in.DocumentName) != DocumentPortForwardingToRemoteHost || aws.ToString(in.Reason) != "r" ||
		in.Parameters["portNumber"][0] != "5432" || in.Parameters["host"][0] != "db" || in.Parameters["localPortNumber"][0] != "0" {
		t.Errorf("unexpected input %+v", in)
	}
	in = Spec{Target: "i-0123456789abcdef0", RemotePort: 80}.StartInput()
	if aws.ToString(in.DocumentName) != DocumentPortForwarding || in.Reason != nil || in.Parameters["host"] != nil {
		t.Errorf("unexpected input %+v", in)
	}
	if got := (Spec{Document: "Custom", RemoteHost: "h"}).DocumentName(); got != "Custom" {
		t.Errorf("DocumentName = %q", got)
	}
}

func TestDefaultReason(t *testing.T) {
	r := DefaultReason("v1", "pod ns/name\x00"+strings.Repeat("y", 300))
	if err := ValidateReason(r); err != nil {
		t.Errorf("DefaultReason produced an invalid reason: %v", err)
	}
	if !strings.HasPrefix(r, "ssmtunnel/v1 pod ns/name_") || len([]rune(r)) != MaxReasonLength {
		t.Errorf("DefaultReason = %q", r)
	}
}

func apiErr(code string) error {
	return &smithy.OperationError{ServiceID: "SSM", OperationName: "X", Err: &smithy.GenericAPIError{Code: code, Message: "m"}}
}

func TestErrorClassification(t *testing.T) {
	target := "i-0123456789abcdef0"
	err := classifyStart(target, apiErr("TargetNotConnected"))
	if !errors.Is(err, ErrTargetNotConnected) || !strings.Contains(err.Error(), "instance "+target+" is not connected to Systems Manager (check the SSM Agent and the instance's IAM role)") {
		t.Errorf("TargetNotConnected: %v", err)
	}
	for _, code := range []string{"AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException"} {
		if err := classifyStart(target, apiErr(code)); !errors.Is(err, ErrAccessDenied) {
			t.Errorf("%s: %v, want ErrAccessDenied", code, err)
		}
		if resumable(apiErr(code)) {
			t.Errorf("%s is resumable", code)
		}
	}
	if err := classifyStart(target, errors.New("operation error SSM: StartSession, get identity: get credentials: failed to refresh cached credentials")); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("credentials: %v", err)
	}
	if err := classifyStart(target, apiErr("InvalidDocument")); !errors.Is(err, ErrInvalidDocument) {
		t.Errorf("InvalidDocument: %v", err)
	}
	for _, code := range []string{"DoesNotExistException", "TargetNotConnected"} {
		if resumable(apiErr(code)) {
			t.Errorf("%s is resumable", code)
		}
	}
	if !resumable(apiErr("InternalServerError")) || !resumable(errors.New("connection refused")) || !resumable(apiErr("ThrottlingException")) {
		t.Error("transient failures must be resumable")
	}
}

func TestBackoffIsCappedAndJittered(t *testing.T) {
	c, err := NewClient(ClientConfig{API: nopAPI{}, ResumeInitialBackoff: 100 * time.Millisecond, ResumeMaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s := &Session{c: c}
	seen := map[time.Duration]bool{}
	for n := range 40 {
		d := s.backoff(n)
		want := min(time.Second, 100*time.Millisecond<<min(n, 30))
		if d < want/2 || d > want {
			t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, want/2, want)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Errorf("backoff not jittered: %d distinct values in 40", len(seen))
	}
}

func TestClientConfigValidate(t *testing.T) {
	if _, err := NewClient(ClientConfig{}); err == nil {
		t.Error("missing API accepted")
	}
	if _, err := NewClient(ClientConfig{API: nopAPI{}, HandshakeTimeout: -1}); err == nil {
		t.Error("negative timeout accepted")
	}
}

func TestLoadAWSConfig(t *testing.T) {
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	if _, err := LoadAWSConfig(context.Background(), AWSOptions{}); !errors.Is(err, ErrNoRegion) {
		t.Errorf("no region: %v, want ErrNoRegion", err)
	}
	cfg, err := LoadAWSConfig(context.Background(), AWSOptions{Region: "eu-west-1"})
	if err != nil || cfg.Region != "eu-west-1" || cfg.Retryer().MaxAttempts() != 8 {
		t.Fatalf("LoadAWSConfig: %v %+v", err, cfg)
	}
	if err := CheckCredentials(context.Background(), cfg); err != nil {
		t.Errorf("CheckCredentials with env keys: %v", err)
	}
	if _, err := LoadAWSConfig(context.Background(), AWSOptions{Region: "eu-west-1", RoleARN: "not-an-arn"}); err == nil {
		t.Error("bad role ARN accepted")
	}
	cfg, err = LoadAWSConfig(context.Background(), AWSOptions{Region: "eu-west-1", RoleARN: "arn:aws:iam::123456789012:role/tunnel"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.Credentials.(*aws.CredentialsCache); !ok {
		t.Errorf("assumed-role credentials are %T, want a cache around the AssumeRole provider", cfg.Credentials)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	cfg, err = LoadAWSConfig(context.Background(), AWSOptions{Region: "eu-west-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckCredentials(context.Background(), cfg); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("CheckCredentials without credentials: %v, want ErrNoCredentials", err)
	}
}

type nopAPI struct{ API }

func TestOnlyPortForwardingAWSDocuments(t *testing.T) {
	for doc, ok := range map[string]bool{
		"AWS-StartPortForwardingSession": true, "AWS-StartPortForwardingSessionToRemoteHost": true,
		"arn:aws:ssm:eu-west-1::document/AWS-StartPortForwardingSession": true, "My-PortForwarding": true,
		"arn:aws:ssm:eu-west-1:123456789012:document/Team-Forward": true,
		"AWS-StartSSHSession": false, "AWS-StartInteractiveCommand": false, "AWS-RunShellScript": false,
		"arn:aws:ssm:eu-west-1::document/AWS-StartNonInteractiveCommand": false, "AWS-StartPortForwardingSessionX": false,
	} {
		err := Spec{Target: "i-0123456789abcdef0", RemotePort: 1, Document: doc}.Validate()
		if (err == nil) != ok || !ok && !errors.Is(err, ErrNotPortDocument) {
			t.Errorf("document %q: Validate = %v, want allowed %t", doc, err, ok)
		}
	}
}

func TestCheckStreamURL(t *testing.T) {
	strict, lax := &Client{}, &Client{cfg: ClientConfig{AllowInsecureStream: true}}
	for _, tc := range []struct {
		url         string
		strict, lax bool
	}{
		{"wss://ssmmessages.eu-west-1.amazonaws.com/v1/data-channel/s-1?role=publish_subscribe", true, true},
		{"ws://127.0.0.1:4566/v1/data-channel/s-1", true, true},
		{"ws://[::1]:4566/v1/data-channel/s-1", true, true},
		{"ws://localhost:4566/v1/data-channel/s-1", true, true},
		{"ws://ssm-emulator.ns.svc:4566/v1/data-channel/s-1", false, true},
		{"ws://ssmmessages.eu-west-1.amazonaws.com/v1/data-channel/s-1", false, true},
		{"http://ssmmessages.eu-west-1.amazonaws.com/", false, false},
	} {
		if err := strict.checkStreamURL(tc.url); (err == nil) != tc.strict {
			t.Errorf("checkStreamURL(%s) = %v, want allowed %t", tc.url, err, tc.strict)
		}
		if err := lax.checkStreamURL(tc.url); (err == nil) != tc.lax {
			t.Errorf("with AllowInsecureStream, checkStreamURL(%s) = %v, want allowed %t", tc.url, err, tc.lax)
		}
	}
}
