package session

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// API is the slice of the SSM API a tunnel uses (§2). *ssm.Client satisfies it; tests may substitute
// anything that speaks the same calls, though the acceptance tests use the real client against the emulator.
type API interface {
	StartSession(ctx context.Context, in *ssm.StartSessionInput, optFns ...func(*ssm.Options)) (*ssm.StartSessionOutput, error)
	ResumeSession(ctx context.Context, in *ssm.ResumeSessionInput, optFns ...func(*ssm.Options)) (*ssm.ResumeSessionOutput, error)
	TerminateSession(ctx context.Context, in *ssm.TerminateSessionInput, optFns ...func(*ssm.Options)) (*ssm.TerminateSessionOutput, error)
}

var _ API = (*ssm.Client)(nil)

// AWSOptions select what LoadAWSConfig adds on top of the SDK's standard configuration chain.
type AWSOptions struct {
	// Region overrides AWS_REGION / the shared config. Empty keeps the chain's choice.
	Region string
	// RoleARN, when set, is assumed (sts:AssumeRole) with the chain's credentials as the source.
	RoleARN string
	// RoleSessionName names the assumed-role session (shows up in CloudTrail). Defaults to "ssmtunnel".
	RoleSessionName string
	// RetryMaxAttempts bounds the SDK retryer per API call, throttling included. Defaults to 8.
	RetryMaxAttempts int
	// RetryMaxBackoff caps the SDK retryer's jittered exponential backoff. Defaults to 20s.
	RetryMaxBackoff time.Duration
	// Profile, when set, is the shared-config profile to load, as AWS_PROFILE would select. Static
	// credentials in the environment still take precedence over it, as in every SDK.
	Profile string
}

// Validate checks the region and role ARN that were given, before any configuration is loaded.
func (o AWSOptions) Validate() error {
	if o.Region != "" && !regionRE.MatchString(o.Region) {
		return fmt.Errorf("%w, got %q", ErrBadRegion, o.Region)
	}
	if o.RoleARN != "" && !roleARNRE.MatchString(o.RoleARN) {
		return fmt.Errorf("%w, got %q", ErrBadRoleARN, o.RoleARN)
	}
	if o.RoleSessionName != "" && !roleSessionNameRE.MatchString(o.RoleSessionName) {
		return fmt.Errorf("role session name %q must be 2-64 letters, digits and +=,.@_-", o.RoleSessionName)
	}
	return nil
}

// ErrNoRegion is returned when neither a flag nor the SDK configuration chain names a region.
var ErrNoRegion = errors.New("no AWS region configured: pass --region or set AWS_REGION")

// LoadAWSConfig loads the SDK's standard configuration (env, shared files, web identity, container
// credentials, IMDS) with a retryer that retries throttling with capped, jittered backoff, and wraps the
// credentials in an AssumeRole provider when RoleARN is set.
func LoadAWSConfig(ctx context.Context, o AWSOptions) (aws.Config, error) {
	if err := o.Validate(); err != nil {
		return aws.Config{}, err
	}
	if o.RetryMaxAttempts <= 0 {
		o.RetryMaxAttempts = 8
	}
	if o.RetryMaxBackoff <= 0 {
		o.RetryMaxBackoff = 20 * time.Second
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(so *retry.StandardOptions) {
				so.MaxAttempts = o.RetryMaxAttempts
				so.MaxBackoff = o.RetryMaxBackoff
			})
		}),
	}
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	if o.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(o.Profile))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("failed to load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, ErrNoRegion
	}
	if o.RoleARN != "" {
		name := o.RoleSessionName
		if name == "" {
			name = "ssmtunnel"
		}
		provider := stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), o.RoleARN, func(ao *stscreds.AssumeRoleOptions) {
			ao.RoleSessionName = name
		})
		cfg.Credentials = aws.NewCredentialsCache(provider)
	}
	return cfg, nil
}

// NewAPI returns the SSM client for cfg. The endpoint comes from the configuration chain
// (AWS_ENDPOINT_URL_SSM or AWS_ENDPOINT_URL), exactly as for a VPC endpoint.
func NewAPI(cfg aws.Config) *ssm.Client { return ssm.NewFromConfig(cfg) }

// CheckCredentials retrieves credentials once so a missing or broken credential chain is reported before
// any session is attempted, with a message that says so.
func CheckCredentials(ctx context.Context, cfg aws.Config) error {
	if cfg.Credentials == nil {
		return fmt.Errorf("%w: the SDK configuration chain found no credentials provider", ErrNoCredentials)
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return fmt.Errorf("%w: %v (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a web identity / Pod Identity for the pod)", ErrNoCredentials, err)
	}
	return nil
}

// invalidateCredentials drops cached credentials so the next call loads fresh ones: the official client's
// resume fails with expired temporary credentials (§10.3, aws/session-manager-plugin#117 and
// aws/session-manager-plugin#136).
func invalidateCredentials(p aws.CredentialsProvider) {
	if c, ok := p.(*aws.CredentialsCache); ok {
		c.Invalidate()
	}
}
