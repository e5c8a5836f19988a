package session

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// Port-forwarding documents published by AWS (§2).
const (
	// DocumentPortForwarding forwards to a port on the target itself.
	DocumentPortForwarding = "AWS-StartPortForwardingSession"
	// DocumentPortForwardingToRemoteHost forwards to host:port as seen from the target.
	DocumentPortForwardingToRemoteHost = "AWS-StartPortForwardingSessionToRemoteHost"
)

// MaxReasonLength is the longest Reason StartSession accepts.
const MaxReasonLength = 256

// The rules for values a user writes. The PortForward API (api/v1alpha1) checks the same values with CEL
// rules written from these patterns, and its tests compare the two, so a spec the API server accepts never
// makes the tunnel refuse its arguments.
const (
	// DocumentPattern: a document name or ARN.
	DocumentPattern = `^[A-Za-z0-9_.:/-]{3,128}$`
	// RegionPattern: an AWS region code (eu-west-1, us-gov-west-1, cn-north-1).
	RegionPattern = `^[a-z]{2}(-[a-z]+)+-[0-9]+$`
	// AWSDocumentPattern matches the documents AWS publishes (AWS-..., by name or ARN), and
	// AWSPortDocumentPattern the two of them that forward ports: any other AWS document (AWS-StartSSHSession,
	// AWS-StartInteractiveCommand, ...) runs something on the instance instead, and is refused.
	AWSDocumentPattern     = `^(.*/)?AWS-`
	AWSPortDocumentPattern = `^(.*/)?AWS-StartPortForwardingSession(ToRemoteHost)?$`
	// RoleARNPattern: an IAM role ARN in any partition.
	RoleARNPattern = `^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$`
)

var (
	targetRE   = regexp.MustCompile(`^(i-[0-9a-f]{8}([0-9a-f]{9})?|mi-[0-9a-f]{17}|ecs:[A-Za-z0-9_-]{1,255}_[0-9a-f]{32}_[0-9a-f]{32}-[0-9]{1,10})$`)
	documentRE = regexp.MustCompile(DocumentPattern)
	hostRE     = regexp.MustCompile(`^[A-Za-z0-9.:\-_\[\]%]{1,253}$`)
	regionRE   = regexp.MustCompile(RegionPattern)
	awsDocRE   = regexp.MustCompile(AWSDocumentPattern)
	awsPortRE  = regexp.MustCompile(AWSPortDocumentPattern)
	roleARNRE  = regexp.MustCompile(RoleARNPattern)
	// roleSessionNameRE is STS's rule for RoleSessionName.
	roleSessionNameRE = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
)

// Errors of Spec.Validate. Each says what a valid value looks like.
var (
	ErrBadTarget       = errors.New("target must be an instance ID (i-0123456789abcdef0), a managed instance ID (mi-0123456789abcdef0) or ecs:CLUSTER_TASK_RUNTIMEID")
	ErrBadReason       = errors.New("reason must be 1-256 printable characters without control characters")
	ErrBadDocument     = errors.New("document name must be 3-128 characters of letters, digits, _ - . : /")
	ErrNotPortDocument = errors.New("document does not forward ports")
	ErrBadRegion       = errors.New("region must be an AWS region code such as eu-west-1 or us-gov-west-1")
	ErrBadRoleARN      = errors.New("role ARN must be an IAM role ARN such as arn:aws:iam::123456789012:role/name")
)

// Spec says which session to start: the target, the document and its parameters (§2).
type Spec struct {
	// Target is the instance (i-…, mi-…) or ECS task (ecs:…) to forward through.
	Target string
	// RemotePort is the destination port on the target (or on RemoteHost).
	RemotePort int
	// RemoteHost, when set, selects AWS-StartPortForwardingSessionToRemoteHost: the agent dials
	// RemoteHost:RemotePort instead of localhost.
	RemoteHost string
	// Document overrides the document name (a custom Port document); its parameters must be the same as the
	// AWS documents' (portNumber, localPortNumber and, with RemoteHost, host).
	Document string
	// Reason is recorded by Session Manager with the session; it should say who opened it.
	Reason string
}

// DocumentName returns the document StartSession is called with.
func (s Spec) DocumentName() string {
	switch {
	case s.Document != "":
		return s.Document
	case s.RemoteHost != "":
		return DocumentPortForwardingToRemoteHost
	}
	return DocumentPortForwarding
}

// Validate checks the spec before any API call, so a typo is reported locally with what to fix.
func (s Spec) Validate() error {
	if !targetRE.MatchString(s.Target) {
		return fmt.Errorf("%w, got %q", ErrBadTarget, s.Target)
	}
	if s.RemotePort < 1 || s.RemotePort > 65535 {
		return fmt.Errorf("remote port must be 1-65535, got %d", s.RemotePort)
	}
	if s.RemoteHost != "" {
		if !hostRE.MatchString(s.RemoteHost) {
			return fmt.Errorf("remote host %q is not a host name or IP address", s.RemoteHost)
		}
		if err := CheckRemoteHost(s.RemoteHost); err != nil {
			return err
		}
	}
	if s.Document != "" && !documentRE.MatchString(s.Document) {
		return fmt.Errorf("%w, got %q", ErrBadDocument, s.Document)
	}
	if awsDocRE.MatchString(s.Document) && !awsPortRE.MatchString(s.Document) {
		return fmt.Errorf("%w: %q is an AWS document that does not forward ports: use %s or %s", ErrNotPortDocument,
			s.Document, DocumentPortForwarding, DocumentPortForwardingToRemoteHost)
	}
	if s.Reason != "" {
		if err := ValidateReason(s.Reason); err != nil {
			return err
		}
	}
	return nil
}

// ValidateReason checks a StartSession Reason: at most 256 characters, printable, no control characters
// (newlines would forge lines in the audit log).
func ValidateReason(r string) error {
	if r == "" || !utf8.ValidString(r) || utf8.RuneCountInString(r) > MaxReasonLength {
		return fmt.Errorf("%w, got %d characters", ErrBadReason, utf8.RuneCountInString(r))
	}
	for _, c := range r {
		if unicode.IsControl(c) || !unicode.IsPrint(c) && c != ' ' {
			return fmt.Errorf("%w: %q contains %U", ErrBadReason, r, c)
		}
	}
	return nil
}

// DefaultReason names who opened a session, e.g. "ssmtunnel/v0.1.0 pod default/db-tunnel-7d9f". Characters
// a Reason may not carry are replaced, and the result is cut to 256 characters.
func DefaultReason(version, who string) string {
	r := []rune("ssmtunnel/" + version + " " + who)
	for i, c := range r {
		if unicode.IsControl(c) || !unicode.IsPrint(c) && c != ' ' {
			r[i] = '_'
		}
	}
	if len(r) > MaxReasonLength {
		r = r[:MaxReasonLength]
	}
	return string(r)
}

// StartInput builds the StartSession request of the spec (§2). localPortNumber is sent as "0": the client,
// not the agent, owns the local listener, and the agent ignores it.
func (s Spec) StartInput() *ssm.StartSessionInput {
	params := map[string][]string{
		"portNumber":      {strconv.Itoa(s.RemotePort)},
		"localPortNumber": {"0"},
	}
	if s.RemoteHost != "" {
		params["host"] = []string{s.RemoteHost}
	}
	in := &ssm.StartSessionInput{
		Target:       aws.String(s.Target),
		DocumentName: aws.String(s.DocumentName()),
		Parameters:   params,
	}
	if s.Reason != "" {
		in.Reason = aws.String(s.Reason)
	}
	return in
}
