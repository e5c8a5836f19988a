/*
Copyright 2026 The ssmtunnel Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package controllers

import (
	"errors"
	"fmt"
	"time"
)

// Defaults of Options, exported so cmd/manager uses them as flag defaults and the docs can quote them.
const (
	// DefaultCredentialsSecretName is the Secret whose keys (AWS_ACCESS_KEY_ID, ...) tunnel pods load as
	// environment when it exists, for clusters without IRSA or Pod Identity.
	DefaultCredentialsSecretName = "ssmtunnel-aws-credentials"
	// DefaultTunnelServiceAccountName is the ServiceAccount the operator ensures in a PortForward's namespace
	// when spec.serviceAccountName is empty. A fixed name lets one IRSA role or Pod Identity association per
	// namespace cover every PortForward in it.
	DefaultTunnelServiceAccountName = "ssmtunnel-tunnel"
	// DefaultDrainTimeout is how long a terminating tunnel pod lets open connections finish.
	DefaultDrainTimeout = 20 * time.Second
	// DefaultResolveInterval is how often a selector target is looked up again; nothing watches AWS, so the
	// controller polls to notice an instance going offline.
	DefaultResolveInterval = 30 * time.Second
	// DefaultStatusInterval is how often the tunnel pods' /readyz is read again: a reason or an unreachable
	// destination shows in the status within this much of the tunnel pods seeing it.
	DefaultStatusInterval = 15 * time.Second
	// terminationMargin is added to the drain timeout for the pod's grace period, so the kubelet never kills
	// a tunnel that is still terminating its sessions cleanly.
	terminationMargin = 10 * time.Second
	// preStopDelay is how long a terminating tunnel pod keeps accepting before it drains: the time for
	// endpoint removal to reach kube-proxy, so no client is refused during a rollout or pod deletion.
	preStopDelay = 5 * time.Second
)

// Values of Options.DefaultClients.
const (
	DefaultClientsAll       = "all"
	DefaultClientsNamespace = "namespace"
)

// ErrInvalidOptions is wrapped by Options.Validate so callers can tell configuration errors from others.
var ErrInvalidOptions = errors.New("invalid operator options")

// Options configure what the reconciler builds; they come from the operator's flags.
type Options struct {
	// TunnelImage is the image of the tunnel pods; the operator's own image by default, so operator and
	// tunnel never drift apart.
	TunnelImage string
	// DefaultRegion is the AWS region used when spec.region is empty. Empty leaves the region to the tunnel
	// pod's environment.
	DefaultRegion string
	// AWSEndpointURL, when set, is passed to tunnel pods as AWS_ENDPOINT_URL_SSM (a VPC endpoint, or the
	// emulator in tests).
	AWSEndpointURL string
	// CredentialsSecretName is an optional Secret loaded into the tunnel pods' environment.
	CredentialsSecretName string
	// DefaultServiceAccountName is the tunnel ServiceAccount used when spec.serviceAccountName is empty.
	DefaultServiceAccountName string
	// ServiceAccountAnnotations are set on the default tunnel ServiceAccount, e.g. the IRSA role ARN
	// (eks.amazonaws.com/role-arn).
	ServiceAccountAnnotations map[string]string
	// DrainTimeout is passed to the tunnel as --drain-timeout; the grace period covers it.
	DrainTimeout time.Duration
	// ResolveInterval is how often selector targets are resolved again.
	ResolveInterval time.Duration
	// StatusInterval is how often the tunnel pods' /readyz is read again while the PortForward has pods:
	// why a pod is not ready, and whether the destination answers, change without any Kubernetes event.
	StatusInterval time.Duration
	// AdmissionPolicy makes the operator keep a ValidatingAdmissionPolicy from the PortForwardPolicies, so
	// the API server refuses denied PortForwards at kubectl apply.
	AdmissionPolicy bool
	// PolicyDefault applies to namespaces no PortForwardPolicy selects: PolicyDefaultAllow (default) or
	// PolicyDefaultDeny.
	PolicyDefault PolicyDefault
	// DefaultClients says who may connect to PortForwards without allowedClients: DefaultClientsAll
	// (default) or DefaultClientsNamespace (pods of the PortForward's namespace).
	DefaultClients string
	// MetricsFromNamespaces, when set, are the only namespaces that may scrape the tunnel pods' metrics.
	MetricsFromNamespaces []string
	// OperatorNamespace is the operator's namespace: the tunnel pods' NetworkPolicy admits it to /readyz.
	OperatorNamespace string
	// OperatorUsername is the operator's own Kubernetes username (system:serviceaccount:<ns>:<name>). When
	// set, an admission policy lets that identity write only Deployments whose ServiceAccount a
	// PortForwardPolicy allows.
	OperatorUsername string
}

// WithDefaults returns o with every unset field set to its default.
func (o Options) WithDefaults() Options {
	if o.CredentialsSecretName == "" {
		o.CredentialsSecretName = DefaultCredentialsSecretName
	}
	if o.DefaultServiceAccountName == "" {
		o.DefaultServiceAccountName = DefaultTunnelServiceAccountName
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.ResolveInterval == 0 {
		o.ResolveInterval = DefaultResolveInterval
	}
	if o.DefaultClients == "" {
		o.DefaultClients = DefaultClientsAll
	}
	if o.PolicyDefault == "" {
		o.PolicyDefault = PolicyDefaultAllow
	}
	if o.StatusInterval == 0 {
		o.StatusInterval = DefaultStatusInterval
	}
	return o
}

// Validate reports the first option that cannot work, saying what to set.
func (o Options) Validate() error {
	switch {
	case o.TunnelImage == "":
		return fmt.Errorf("%w: the tunnel image is empty: set --tunnel-image or TUNNEL_IMAGE", ErrInvalidOptions)
	case o.DrainTimeout < 0:
		return fmt.Errorf("%w: drain timeout %s is negative", ErrInvalidOptions, o.DrainTimeout)
	case o.ResolveInterval < time.Second:
		return fmt.Errorf("%w: resolve interval %s is below 1s", ErrInvalidOptions, o.ResolveInterval)
	case o.DefaultClients != DefaultClientsAll && o.DefaultClients != DefaultClientsNamespace:
		return fmt.Errorf("%w: default clients %q must be all or namespace", ErrInvalidOptions, o.DefaultClients)
	case o.PolicyDefault != PolicyDefaultAllow && o.PolicyDefault != PolicyDefaultDeny:
		return fmt.Errorf("%w: policy default %q must be allow or deny", ErrInvalidOptions, o.PolicyDefault)
	case o.StatusInterval < time.Second:
		return fmt.Errorf("%w: status interval %s is below 1s", ErrInvalidOptions, o.StatusInterval)
	}
	return nil
}
