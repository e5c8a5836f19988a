package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// sdkCallTimeout bounds every AWS SDK call the CLI makes, the SDK's retries included: loading the
// configuration, retrieving credentials (AssumeRole, web identity, ...), and each StartSession,
// ResumeSession and TerminateSession. A variable for tests.
var sdkCallTimeout = 30 * time.Second

// endpoint is the SSM endpoint the client calls and where that choice comes from.
type endpoint struct {
	url, source string
}

// ssmEndpoint is c's endpoint: the configured base endpoint (AWS_ENDPOINT_URL_SSM, AWS_ENDPOINT_URL, the
// shared config's endpoint_url) or the region's default, resolved as the client resolves it.
func ssmEndpoint(ctx context.Context, c *ssm.Client) endpoint {
	o := c.Options()
	if o.BaseEndpoint != nil {
		u := *o.BaseEndpoint
		switch {
		case u == os.Getenv("AWS_ENDPOINT_URL_SSM"):
			return endpoint{u, "from AWS_ENDPOINT_URL_SSM"}
		case u == os.Getenv("AWS_ENDPOINT_URL"):
			return endpoint{u, "from AWS_ENDPOINT_URL; AWS_ENDPOINT_URL_SSM overrides it for SSM"}
		}
		return endpoint{u, "from the shared config's endpoint_url; AWS_ENDPOINT_URL_SSM overrides it"}
	}
	source := "the default for " + o.Region + "; AWS_ENDPOINT_URL_SSM overrides it"
	e, err := o.EndpointResolverV2.ResolveEndpoint(ctx, ssm.EndpointParameters{
		Region:       aws.String(o.Region),
		UseFIPS:      aws.Bool(o.EndpointOptions.UseFIPSEndpoint == aws.FIPSEndpointStateEnabled),
		UseDualStack: aws.Bool(o.EndpointOptions.UseDualStackEndpoint == aws.DualStackEndpointStateEnabled),
	})
	if err != nil {
		return endpoint{"the SSM endpoint of " + o.Region, source}
	}
	return endpoint{e.URI.String(), source}
}

// boundedAPI is the SSM API with a timeout on every call, whose errors name the endpoint when it cannot
// be reached. The tunnel library bounds ResumeSession and TerminateSession itself (ClientConfig.APITimeout)
// but calls StartSession with its caller's context, which has no deadline.
type boundedAPI struct {
	api      session.API
	endpoint endpoint
	timeout  time.Duration
}

var _ session.API = (*boundedAPI)(nil)

func (b *boundedAPI) StartSession(ctx context.Context, in *ssm.StartSessionInput, optFns ...func(*ssm.Options)) (*ssm.StartSessionOutput, error) {
	cctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	out, err := b.api.StartSession(cctx, in, optFns...)
	return out, b.explain(ctx, err)
}

func (b *boundedAPI) ResumeSession(ctx context.Context, in *ssm.ResumeSessionInput, optFns ...func(*ssm.Options)) (*ssm.ResumeSessionOutput, error) {
	cctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	out, err := b.api.ResumeSession(cctx, in, optFns...)
	return out, b.explain(ctx, err)
}

func (b *boundedAPI) TerminateSession(ctx context.Context, in *ssm.TerminateSessionInput, optFns ...func(*ssm.Options)) (*ssm.TerminateSessionOutput, error) {
	cctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	out, err := b.api.TerminateSession(cctx, in, optFns...)
	return out, b.explain(ctx, err)
}

// explain wraps err in an unreachableError when the request never got an answer: it could not be sent
// (connection refused, no such host, TLS) or the timeout passed. ctx is the caller's: when it ended, the
// caller gave up and err says nothing about the endpoint.
func (b *boundedAPI) explain(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	var send *smithyhttp.RequestSendError
	var op *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		u := &unreachableError{endpoint: b.endpoint, timeout: b.timeout, err: err}
		if errors.As(err, &op) {
			u.cause = op // what the last attempt met, when it failed below HTTP
		}
		return u
	case errors.As(err, &send):
		return &unreachableError{endpoint: b.endpoint, cause: sendCause(send), err: err}
	}
	return err
}

// sendCause is the network error under a failed send ("dial tcp 127.0.0.1:1: connect: connection
// refused"), without the SDK's layers around it.
func sendCause(e *smithyhttp.RequestSendError) error {
	var op *net.OpError
	if errors.As(e, &op) {
		return op
	}
	var dns *net.DNSError
	if errors.As(e, &dns) {
		return dns
	}
	return e.Err
}

// unreachableError: an SSM call got no answer from the endpoint. One line that names the endpoint, where it
// comes from and AWS_ENDPOINT_URL_SSM; the SDK's error stays reachable through Unwrap.
type unreachableError struct {
	endpoint endpoint
	cause    error         // why the send failed
	timeout  time.Duration // no answer came within it (0: the send failed)
	err      error
}

func (e *unreachableError) Error() string {
	if e.timeout > 0 {
		s := fmt.Sprintf("no answer from the SSM endpoint %s (%s) within %s", e.endpoint.url, e.endpoint.source, e.timeout)
		if e.cause != nil {
			s += ": " + e.cause.Error()
		}
		return s
	}
	return fmt.Sprintf("cannot reach the SSM endpoint %s (%s): %v", e.endpoint.url, e.endpoint.source, e.cause)
}

func (e *unreachableError) Unwrap() error { return e.err }

// checkProfile refuses a --profile the SDK would not use: credentials in the environment take precedence
// over a shared-config profile.
func checkProfile(profile string) error {
	if profile == "" {
		return nil
	}
	first := func(names ...string) string {
		for _, n := range names {
			if os.Getenv(n) != "" {
				return n
			}
		}
		return ""
	}
	if id, secret := first("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY"), first("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY"); id != "" && secret != "" {
		return badUsage("--profile %s: %s and %s are set, and the SDK would use them instead of the profile; unset them or leave out --profile", profile, id, secret)
	}
	if os.Getenv("AWS_WEB_IDENTITY_TOKEN_FILE") != "" {
		return badUsage("--profile %s: AWS_WEB_IDENTITY_TOKEN_FILE is set, and the SDK would use it instead of the profile; unset it or leave out --profile", profile)
	}
	return nil
}

// profileError names --profile in a configuration error about a profile that does not exist.
func profileError(profile string, err error) error {
	var missing config.SharedConfigProfileNotExistError
	if profile != "" && errors.As(err, &missing) {
		return fmt.Errorf("--profile %s: no such profile in %s", profile, strings.Join(missing.Filename, ", "))
	}
	return err
}
