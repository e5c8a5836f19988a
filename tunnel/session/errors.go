package session

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
)

// Sentinel errors that callers (the CLI, the session pool) branch on. Errors returned by this package wrap
// one of them where it applies, so errors.Is works across the wrapping.
var (
	// ErrTargetNotConnected: the target is unknown to Systems Manager or its agent is offline.
	ErrTargetNotConnected = errors.New("target is not connected to Systems Manager")
	// ErrAccessDenied: the credentials were refused (403, AccessDenied, expired or invalid tokens).
	ErrAccessDenied = errors.New("access denied")
	// ErrNoCredentials: no credentials could be loaded from the configuration chain.
	ErrNoCredentials = errors.New("no AWS credentials")
	// ErrInvalidDocument: the session document does not exist or is not a port document.
	ErrInvalidDocument = errors.New("invalid session document")
	// ErrNotResumable: ResumeSession said the session is gone (no token, 403, DoesNotExist); a new session is
	// needed (§10.3).
	ErrNotResumable = errors.New("session cannot be resumed")
	// ErrClosed: the session was closed by its owner.
	ErrClosed = errors.New("session closed")
)

// apiCode returns the AWS error code of err, or "".
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// isAccessDenied reports whether err means the caller's credentials or permissions were refused.
func isAccessDenied(err error) bool {
	switch apiCode(err) {
	case "AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
		"ExpiredToken", "ExpiredTokenException", "InvalidSignatureException", "SignatureDoesNotMatch",
		"MissingAuthenticationToken", "IncompleteSignature":
		return true
	}
	return httpStatus(err) == http.StatusForbidden
}

// isCredentialsError reports whether the SDK failed before sending, while loading credentials.
func isCredentialsError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "get identity") || strings.Contains(s, "get credentials") ||
		strings.Contains(s, "failed to retrieve credentials") || strings.Contains(s, "failed to refresh cached credentials")
}

// classifyStart wraps a StartSession error with the sentinel that says what to fix.
func classifyStart(target string, err error) error {
	switch code := apiCode(err); {
	case code == "TargetNotConnected":
		return fmt.Errorf("%w: instance %s is not connected to Systems Manager (check the SSM Agent and the instance's IAM role): %v",
			ErrTargetNotConnected, target, err)
	case code == "InvalidDocument" || code == "InvalidDocumentType":
		return fmt.Errorf("%w: %v", ErrInvalidDocument, err)
	case isAccessDenied(err):
		return fmt.Errorf("%w: the credentials were refused for ssm:StartSession on %s (check the IAM policy): %v",
			ErrAccessDenied, target, err)
	case isCredentialsError(err):
		return fmt.Errorf("%w: %v", ErrNoCredentials, err)
	}
	return fmt.Errorf("failed to start a session on %s: %w", target, err)
}

// resumable reports whether a ResumeSession failure is worth retrying. Refusals that will not change by
// retrying (403, the session is gone, the target disconnected) end the session (§10.3).
func resumable(err error) bool {
	if isAccessDenied(err) {
		return false
	}
	switch apiCode(err) {
	case "DoesNotExistException", "TargetNotConnected", "InvalidParameters", "ValidationException":
		return false
	}
	if s := httpStatus(err); s >= 400 && s < 500 && s != http.StatusTooManyRequests && s != http.StatusRequestTimeout {
		// A client error other than throttling (which the SDK already retried) will not heal.
		return apiCode(err) == "ThrottlingException"
	}
	return true
}

// Reasons classify why a session could not start or ended, for readiness bodies, metrics and the
// operator's conditions: short CamelCase words that say where to look, never the cloud's raw text.
const (
	ReasonTargetNotConnected = "TargetNotConnected"
	ReasonAccessDenied       = "AccessDenied"
	ReasonNoCredentials      = "NoCredentials"
	ReasonInvalidDocument    = "InvalidDocument"
	ReasonThrottled          = "Throttled"
	ReasonSessionEnded       = "SessionEnded"
	ReasonUnknown            = "Unknown"
)

// Reason classifies err (nil: "").
func Reason(err error) string {
	var cc *datachannel.ChannelClosedError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrTargetNotConnected):
		return ReasonTargetNotConnected
	case errors.Is(err, ErrAccessDenied):
		return ReasonAccessDenied
	case errors.Is(err, ErrNoCredentials):
		return ReasonNoCredentials
	case errors.Is(err, ErrInvalidDocument):
		return ReasonInvalidDocument
	case isThrottled(err):
		return ReasonThrottled
	case errors.Is(err, ErrNotResumable), errors.As(err, &cc):
		return ReasonSessionEnded
	}
	return ReasonUnknown
}

func isThrottled(err error) bool {
	switch apiCode(err) {
	case "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded":
		return true
	}
	return httpStatus(err) == http.StatusTooManyRequests
}
