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

package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of a PortForward. Ready is what clients wait for; Progressing and Degraded explain why it is
// not (yet) Ready, in the style of Deployments.
const (
	// ConditionReady is True when the Service has at least one ready tunnel pod behind it.
	ConditionReady = "Ready"
	// ConditionProgressing is True while the tunnel pods are being created or rolled.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when something needs the user's attention (fewer ready pods than asked,
	// pods crash-looping, no online instance for the selector, sessions that cannot start).
	ConditionDegraded = "Degraded"
	// ConditionDestinationReachable is what the tunnel pods last saw of the destination behind the instance:
	// True when a connection reached it, False when the SSM Agent could not connect to it
	// (ConnectToPortError), Unknown before any connection got an answer. Ready does not depend on it: a
	// Ready PortForward has sessions up, and traffic can flow as soon as the destination accepts it.
	ConditionDestinationReachable = "DestinationReachable"
)

// Reasons of the PortForward conditions. Exported so tools and tests match on them instead of on messages.
const (
	// ReasonAvailable: all requested tunnel pods are ready.
	ReasonAvailable = "Available"
	// ReasonPartiallyAvailable: some, but not all, tunnel pods are ready.
	ReasonPartiallyAvailable = "PartiallyAvailable"
	// ReasonUnavailable: no tunnel pod is ready.
	ReasonUnavailable = "Unavailable"
	// ReasonRollingOut: the Deployment has not yet brought every pod to the current template.
	ReasonRollingOut = "RollingOut"
	// ReasonRolledOut: the Deployment runs the current template everywhere.
	ReasonRolledOut = "RolledOut"
	// ReasonScaledToZero: spec.replicas is 0, so the Service has no backends on purpose.
	ReasonScaledToZero = "ScaledToZero"
	// ReasonCrashLooping: at least one tunnel pod is in CrashLoopBackOff; its logs say why.
	ReasonCrashLooping = "CrashLooping"
	// ReasonNoOnlineInstance: no managed instance matching the selector is Online in Systems Manager.
	ReasonNoOnlineInstance = "NoOnlineInstance"
	// ReasonInvalidTarget: Systems Manager rejected the target lookup (bad tag filter, missing permissions).
	ReasonInvalidTarget = "InvalidTarget"
	// ReasonAsExpected: the condition holds no problem.
	ReasonAsExpected = "AsExpected"

	// Reasons the tunnel pods report when their sessions cannot start (Ready False, Degraded True).

	// ReasonTargetNotConnected: the instance is not connected to Systems Manager (stopped, or its agent
	// cannot reach the service).
	ReasonTargetNotConnected = "TargetNotConnected"
	// ReasonAccessDenied: the tunnel pods' AWS identity may not start a session on the target.
	ReasonAccessDenied = "AccessDenied"
	// ReasonNoCredentials: the tunnel pods found no AWS credentials.
	ReasonNoCredentials = "NoCredentials"
	// ReasonThrottled: Systems Manager throttles the tunnel pods' API calls; they retry with backoff.
	ReasonThrottled = "Throttled"
	// ReasonInvalidDocument: the session document does not exist or does not forward ports.
	ReasonInvalidDocument = "InvalidDocument"
	// ReasonSessionEnded: the sessions keep ending before they can carry traffic.
	ReasonSessionEnded = "SessionEnded"
	// ReasonSessionFailed: the sessions fail for a reason the tunnel pods do not classify; their logs say more.
	ReasonSessionFailed = "SessionFailed"

	// Reasons of the DestinationReachable condition.

	// ReasonDestinationReachable: the latest answered connection reached the destination.
	ReasonDestinationReachable = "DestinationReachable"
	// ReasonDestinationUnreachable: the SSM Agent could not connect to the destination.
	ReasonDestinationUnreachable = "DestinationUnreachable"
	// ReasonNotObserved: no connection has been answered yet (no traffic, and no spec.destinationProbe).
	ReasonNotObserved = "NotObserved"
)

// PortForwardSpec is the desired state of a PortForward.
// +kubebuilder:validation:XValidation:rule="!has(self.remoteHost) || !has(self.documentName) || self.documentName != 'AWS-StartPortForwardingSession'",message="documentName AWS-StartPortForwardingSession cannot reach a remoteHost: remove documentName or use AWS-StartPortForwardingSessionToRemoteHost"
type PortForwardSpec struct {
	// target is the managed instance whose Session Manager agent carries the traffic: exactly one of
	// instanceID or selector. The kind of target cannot change after creation.
	// +required
	Target Target `json:"target"`

	// remoteHost, when set, makes the instance forward to this host (a DNS name or IP address it can reach)
	// instead of to its own localhost, using the AWS-StartPortForwardingSessionToRemoteHost document.
	// Loopback, link-local, unspecified and instance-metadata hosts are refused in every notation, whatever
	// any policy allows: through the instance they reach its credentials and its own services (the same
	// rules as the tunnel's session.CheckRemoteHost).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="isIP(self) || self.matches('^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\\\\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$')",message="remoteHost must be a DNS name (letters, digits, '-' and '.') or an IP address, without scheme or port"
	// +kubebuilder:validation:XValidation:rule="!isIP(self) || !(ip(self).isLoopback() || ip(self).isUnspecified() || ip(self).isLinkLocalUnicast() || ['0.0.0.0/8', 'fd00:ec2::/32', '::/96', '64:ff9b::/96', '64:ff9b:1::/48', '2002::/16'].exists(c, cidr(c).containsIP(self)))",message="remoteHost must not be a loopback, link-local, unspecified or instance-metadata address, nor an IPv6 spelling of an IPv4 address: the instance's credentials and own services are never forwarded"
	// +kubebuilder:validation:XValidation:rule="isIP(self) || !self.matches('^(0[xX][0-9a-fA-F]*|[0-9]+)([.](0[xX][0-9a-fA-F]*|[0-9]+)){0,3}$')",message="remoteHost must not be an IPv4 address in integer, hexadecimal, octal or shortened notation: write it as four decimal numbers a.b.c.d"
	// +kubebuilder:validation:XValidation:rule="!self.lowerAscii().matches('^(localhost|ip6-localhost|ip6-loopback)$|[.]localhost$|^instance-data([.]|$)')",message="remoteHost must not name the instance's loopback (localhost) or its metadata service (instance-data)"
	RemoteHost string `json:"remoteHost,omitempty"`

	// ports are the ports to expose: each becomes a port of the Service and is forwarded to remotePort on the
	// instance (or on remoteHost). 1 to 16 entries; names and ports must be unique.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(p, self.exists_one(q, q.name == p.name))",message="ports[].name values must be unique: rename the duplicate port"
	// +kubebuilder:validation:XValidation:rule="self.all(p, self.exists_one(q, q.port == p.port))",message="ports[].port values must be unique: each Service port can appear once"
	Ports []PortSpec `json:"ports"`

	// documentName overrides the Session Manager document used to start the sessions. By default
	// AWS-StartPortForwardingSession, or AWS-StartPortForwardingSessionToRemoteHost when remoteHost is set.
	// +optional
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9_.:/-]{3,128}$')",message="documentName may contain only letters, digits, '_', '-', '.', ':' and '/' (a document name or ARN)"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^(.*/)?AWS-') || self.matches('^(.*/)?AWS-StartPortForwardingSession(ToRemoteHost)?$')",message="documentName: of the AWS documents only AWS-StartPortForwardingSession and AWS-StartPortForwardingSessionToRemoteHost forward ports; the others run commands on the instance"
	DocumentName string `json:"documentName,omitempty"`

	// region is the AWS region of the instance, e.g. eu-west-1. Defaults to the operator's --default-region.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]{2}(-[a-z]+)+-[0-9]+$')",message="region must be an AWS region code such as eu-west-1 or us-gov-west-1"
	Region string `json:"region,omitempty"`

	// replicas is the number of tunnel pods. Each has its own Session Manager sessions, so the loss of one pod
	// or session does not cut the Service. 0 pauses the PortForward.
	// +optional
	// +default=2
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=20
	Replicas *int32 `json:"replicas,omitempty"`

	// sessionsPerReplica is the number of Session Manager sessions each tunnel pod keeps per port; connections
	// are spread over them.
	// +optional
	// +default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=8
	SessionsPerReplica *int32 `json:"sessionsPerReplica,omitempty"`

	// maxConnections is the most connections each tunnel pod carries at once per port; connections beyond it are reset at once, so no client can exhaust the pod's memory for the others. Defaults to what fits a quarter of the tunnel container's memory limit at 16 KiB per connection, divided over the ports (2048 for one port under the default 128Mi), and to unlimited when the container has no memory limit.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	MaxConnections *int32 `json:"maxConnections,omitempty"`

	// destinationProbe, when set, makes every tunnel pod open a probe connection through each port
	// periodically, so the DestinationReachable condition is known without traffic. The destination sees
	// a connection that opens and closes at once (a database may log it).
	// +optional
	DestinationProbe *DestinationProbe `json:"destinationProbe,omitempty"`

	// serviceAccountName is the ServiceAccount of the tunnel pods, carrying their AWS identity through IRSA or
	// EKS Pod Identity. Defaults to the operator's default tunnel ServiceAccount, which the operator creates
	// in the namespace.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="serviceAccountName must be a lowercase DNS subdomain (letters, digits, '-' and '.')"
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// roleARN is an IAM role the tunnel pods assume (with their own identity) before calling Systems Manager,
	// e.g. to reach instances in another account.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$')",message="roleARN must be an IAM role ARN such as arn:aws:iam::123456789012:role/name"
	RoleARN string `json:"roleARN,omitempty"`

	// allowedClients, when set, restricts who may connect to the tunnel pods with a NetworkPolicy: only pods
	// matching one of these peers. When empty, every pod in the cluster may connect.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	AllowedClients []ClientPeer `json:"allowedClients,omitempty"`

	// service customises the Service in front of the tunnel pods.
	// +optional
	// +kubebuilder:default={}
	Service ServiceSpec `json:"service,omitempty,omitzero"`

	// podTemplate overrides scheduling and resources of the tunnel pods.
	// +optional
	PodTemplate PodTemplateOverrides `json:"podTemplate,omitempty,omitzero"`
}

// Target names the managed instance that carries the traffic.
// +kubebuilder:validation:XValidation:rule="has(self.instanceID) != has(self.selector)",message="target needs exactly one of instanceID or selector"
// +kubebuilder:validation:XValidation:rule="has(self.instanceID) == has(oldSelf.instanceID)",message="the kind of target (instanceID or selector) cannot change: delete and recreate the PortForward"
type Target struct {
	// instanceID is the ID of an EC2 instance (i-0123456789abcdef0) or an on-premises managed instance
	// (mi-0123456789abcdef0).
	// +optional
	// +kubebuilder:validation:MaxLength=20
	// +kubebuilder:validation:XValidation:rule="self.matches('^(i-([0-9a-f]{8}|[0-9a-f]{17})|mi-[0-9a-f]{17})$')",message="instanceID must be i- followed by 8 or 17 lowercase hex digits (i-0123456789abcdef0) or mi- followed by 17 (mi-0123456789abcdef0)"
	InstanceID string `json:"instanceID,omitempty"`

	// selector picks an Online managed instance by its tags; the controller fails over to another matching
	// instance when the chosen one goes offline. status.resolvedTarget shows the instance in use.
	// +optional
	Selector *InstanceSelector `json:"selector,omitempty"`
}

// InstanceSelector selects managed instances by their tags, as Systems Manager reports them.
type InstanceSelector struct {
	// tags are tag keys and values an instance must all carry (logical AND), e.g. {"role": "db"}.
	// +required
	// +kubebuilder:validation:MinProperties=1
	// +kubebuilder:validation:MaxProperties=8
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) >= 1 && size(k) <= 128 && size(self[k]) <= 256)",message="tag keys must be 1 to 128 characters and tag values at most 256"
	Tags map[string]string `json:"tags"`
}

// Protocol is the transport protocol of a forwarded port. Session Manager port forwarding carries TCP only.
// +kubebuilder:validation:Enum=TCP
type Protocol string

// ProtocolTCP is the only protocol Session Manager port forwarding carries.
const ProtocolTCP Protocol = "TCP"

// PortSpec is one forwarded port.
// +kubebuilder:validation:XValidation:rule="self.name != 'metrics' && self.name != 'health'",message="port names 'metrics' and 'health' are reserved for the tunnel pod: choose another name"
type PortSpec struct {
	// name names the port in the Service and the pods (an IANA service name: lowercase letters, digits and
	// '-', at most 15 characters, at least one letter).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.matches('[a-z]') && !self.contains('--')",message="port name must be lowercase letters, digits and single '-' (not at either end), with at least one letter, e.g. postgres"
	Name string `json:"name"`

	// port is the port of the Service that clients connect to.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// remotePort is the port on the instance (or on remoteHost) that connections are forwarded to.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	RemotePort int32 `json:"remotePort"`

	// protocol is the transport protocol; only TCP.
	// +optional
	// +default="TCP"
	Protocol Protocol `json:"protocol,omitempty"`
}

// ClientPeer is one kind of client allowed to reach the tunnel pods, like a NetworkPolicy peer.
// +kubebuilder:validation:XValidation:rule="has(self.namespaceSelector) || has(self.podSelector)",message="each allowedClients entry needs a namespaceSelector, a podSelector or both"
type ClientPeer struct {
	// namespaceSelector selects namespaces whose pods may connect; with podSelector, only those pods in them.
	// Empty ({}) selects all namespaces. Absent means the PortForward's own namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// podSelector selects pods that may connect. Empty ({}) selects all pods.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
}

// ServiceType is the kind of Service in front of the tunnel pods.
// +kubebuilder:validation:Enum=ClusterIP;Headless
type ServiceType string

const (
	// ServiceTypeClusterIP is a Service with a virtual IP, load-balancing over the tunnel pods.
	ServiceTypeClusterIP ServiceType = "ClusterIP"
	// ServiceTypeHeadless is a Service without a virtual IP: DNS returns the tunnel pods' addresses.
	ServiceTypeHeadless ServiceType = "Headless"
)

// ServiceSpec customises the Service of a PortForward.
type ServiceSpec struct {
	// type is ClusterIP (default) or Headless.
	// +optional
	// +default="ClusterIP"
	Type ServiceType `json:"type,omitempty"`

	// labels are added to the Service; the operator's own labels win on conflict.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	Labels map[string]string `json:"labels,omitempty"`

	// annotations are added to the Service.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	Annotations map[string]string `json:"annotations,omitempty"`
}

// PodTemplateOverrides are the parts of the tunnel pods a user may change. Everything else (command, security
// context, probes) is the operator's.
type PodTemplateOverrides struct {
	// resources of the tunnel container. Defaults to requests of 10m CPU and 32Mi memory, limit 128Mi memory.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// nodeSelector constrains the nodes the tunnel pods run on.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations of the tunnel pods.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// affinity replaces the default, which prefers spreading the tunnel pods over nodes.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// topologySpreadConstraints of the tunnel pods.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`

	// priorityClassName of the tunnel pods.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PriorityClassName string `json:"priorityClassName,omitempty"`
}

// DestinationProbe configures the tunnel pods' probe connections.
type DestinationProbe struct {
	// periodSeconds is how often each tunnel pod probes each port.
	// +optional
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=5
	// +kubebuilder:validation:Maximum=3600
	PeriodSeconds int32 `json:"periodSeconds,omitempty"`
}

// PortForwardStatus is the observed state of a PortForward, computed once per reconcile.
type PortForwardStatus struct {
	// conditions are Ready, Progressing, Degraded and DestinationReachable, with the reasons exported by this
	// package.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the metadata.generation this status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// replicas is the number of tunnel pods the Deployment has.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// readyReplicas is the number of tunnel pods whose sessions are established (readiness reflects the data
	// path).
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// ready is readyReplicas/replicas of the spec, for display.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	Ready string `json:"ready,omitempty"`

	// selector is the label selector of the tunnel pods, for the scale subresource.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Selector string `json:"selector,omitempty"`

	// serviceName is the Service clients connect to; always the PortForward's name.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	ServiceName string `json:"serviceName,omitempty"`

	// addresses are the name.namespace.svc:port addresses of the forwarded ports, one per port.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Addresses []string `json:"addresses,omitempty"`

	// address is the addresses joined with commas, for display.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Address string `json:"address,omitempty"`

	// state is a one-word summary for display: the Ready condition's reason, or DestinationUnreachable
	// while the tunnel is ready but the destination refuses connections.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	State string `json:"state,omitempty"`

	// message says what state means and, when something is wrong, what to fix.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// ports summarises the forwarded ports as port:remotePort pairs, for display.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Ports string `json:"ports,omitempty"`

	// resolvedTarget is the instance in use: spec.target.instanceID, or the Online instance picked for the
	// selector.
	// +optional
	// +kubebuilder:validation:MaxLength=20
	ResolvedTarget string `json:"resolvedTarget,omitempty"`
}

// PortForward exposes ports of a managed instance as a Service in the cluster, carried by tunnel pods over
// Session Manager port forwarding.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=pf,categories=ssmtunnel
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.status.resolvedTarget`
// +kubebuilder:printcolumn:name="Ports",type=string,JSONPath=`.status.ports`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.ready`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Remote-Host",type=string,JSONPath=`.spec.remoteHost`,priority=1
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.status.address`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label starting with a letter (at most 63 lowercase letters, digits and '-'): the Service is named after the PortForward"
type PortForward struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state.
	// +required
	Spec PortForwardSpec `json:"spec"`

	// status is the observed state, written by the operator.
	// +optional
	Status PortForwardStatus `json:"status,omitempty,omitzero"`
}

// PortForwardList is a list of PortForwards, as returned by list calls.
// +kubebuilder:object:root=true
type PortForwardList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the PortForwards.
	Items []PortForward `json:"items"`
}

func init() {
	SchemeBuilder.Register(&PortForward{}, &PortForwardList{})
}
