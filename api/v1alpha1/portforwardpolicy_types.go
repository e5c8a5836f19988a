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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReasonPolicyDenied: no PortForwardPolicy that grants the PortForward's namespace allows part of its spec;
// the tunnel pods are scaled to zero until one does.
const ReasonPolicyDenied = "PolicyDenied"

// PortForwardPolicySpec says what the PortForwards of the selected namespaces may reach. Policies add up as
// alternatives: a PortForward is allowed when one policy that selects its namespace allows all of it — its
// target, remoteHost, every remotePort, documentName, roleARN and serviceAccountName — so two policies never
// combine into a grant neither makes. A list left empty allows nothing of its kind beyond the defaults each
// field names.
type PortForwardPolicySpec struct {
	// namespaceSelector selects the namespaces this policy grants; {} selects every namespace.
	// +required
	NamespaceSelector metav1.LabelSelector `json:"namespaceSelector"`

	// instanceIDs are the instances the namespaces may target by spec.target.instanceID; "*" allows any
	// instance, and any tag selector.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=20
	// +kubebuilder:validation:items:XValidation:rule="self == '*' || self.matches('^(i-([0-9a-f]{8}|[0-9a-f]{17})|mi-[0-9a-f]{17})$')",message="instanceIDs entries must be instance IDs (i-0123456789abcdef0, mi-0123456789abcdef0) or *"
	InstanceIDs []string `json:"instanceIDs,omitempty"`

	// selectorTags allow tag-selector targets (spec.target.selector) whose tags include every one of these,
	// so a namespace can only select the instances tagged for it. Empty: tag selectors are not allowed
	// (unless instanceIDs has "*").
	// +optional
	// +listType=map
	// +listMapKey=key
	// +kubebuilder:validation:MaxItems=16
	SelectorTags []RequiredTag `json:"selectorTags,omitempty"`

	// remoteHosts are the hosts spec.remoteHost may name: CIDRs (10.0.0.0/8, fd00::/8) for IP addresses, and
	// DNS names, exact (db.internal) or with a leading "*." for any name below (*.db.internal). Empty: no
	// remoteHost (the instance's own ports only). Loopback, link-local and metadata hosts stay refused.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) || self.matches('^([*][.])?[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?([.][A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$')",message="remoteHosts entries must be CIDRs (10.0.0.0/8) or DNS names, optionally starting with *. (*.db.internal)"
	RemoteHosts []string `json:"remoteHosts,omitempty"`

	// remotePorts are the ports spec.ports[].remotePort may use: single ports (5432) and ranges
	// (8000-8999). Empty allows every port.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=11
	// +kubebuilder:validation:items:XValidation:rule="self.matches('^[0-9]{1,5}(-[0-9]{1,5})?$')",message="remotePorts entries must be a port (5432) or a range (8000-8999)"
	RemotePorts []string `json:"remotePorts,omitempty"`

	// documents are the spec.documentName values allowed besides the two AWS port-forwarding documents,
	// which are always allowed: custom documents by name or ARN.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=128
	Documents []string `json:"documents,omitempty"`

	// roleARNs are the spec.roleARN values allowed, exact or ending in "*" for a prefix
	// (arn:aws:iam::123456789012:role/team-a-*). Empty: no roleARN.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=2048
	RoleARNs []string `json:"roleARNs,omitempty"`

	// serviceAccountNames are the spec.serviceAccountName values allowed besides the operator's default
	// tunnel ServiceAccount, which is always allowed.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	ServiceAccountNames []string `json:"serviceAccountNames,omitempty"`
}

// RequiredTag is a tag a selector target must include.
// +kubebuilder:validation:XValidation:rule="has(self.value) != has(self.valueFromNamespaceLabel)",message="a selectorTags entry needs exactly one of value or valueFromNamespaceLabel"
type RequiredTag struct {
	// key is the tag key.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Key string `json:"key"`
	// value is the tag value the selector must require.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Value string `json:"value,omitempty"`
	// valueFromNamespaceLabel makes the value the PortForward namespace's label of this key, so one policy
	// fences every team: with team=a on the namespace, its selectors must include the tag team=a. A
	// namespace without the label may not use tag selectors under this entry.
	// +optional
	// +kubebuilder:validation:MaxLength=317
	ValueFromNamespaceLabel string `json:"valueFromNamespaceLabel,omitempty"`
}

// PortForwardPolicy grants the PortForwards of some namespaces the use of instances, remote hosts, ports,
// documents, roles and ServiceAccounts. Cluster-scoped, owned by cluster administrators. When no policy
// selects a namespace, the operator's --policy-default (chart value policy.default) decides.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=pfpolicy,categories=ssmtunnel
// +kubebuilder:printcolumn:name="Namespaces",type=string,JSONPath=`.spec.namespaceSelector`
// +kubebuilder:printcolumn:name="Instances",type=string,JSONPath=`.spec.instanceIDs`
// +kubebuilder:printcolumn:name="Remote-Hosts",type=string,JSONPath=`.spec.remoteHosts`
// +kubebuilder:printcolumn:name="Ports",type=string,JSONPath=`.spec.remotePorts`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Tags",type=string,JSONPath=`.spec.selectorTags`,priority=1
// +kubebuilder:printcolumn:name="Documents",type=string,JSONPath=`.spec.documents`,priority=1
// +kubebuilder:printcolumn:name="Roles",type=string,JSONPath=`.spec.roleARNs`,priority=1
// +kubebuilder:printcolumn:name="Service-Accounts",type=string,JSONPath=`.spec.serviceAccountNames`,priority=1
type PortForwardPolicy struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the policy allows.
	// +required
	Spec PortForwardPolicySpec `json:"spec"`
}

// PortForwardPolicyList is a list of PortForwardPolicies.
// +kubebuilder:object:root=true
type PortForwardPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the policies.
	Items []PortForwardPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&PortForwardPolicy{}, &PortForwardPolicyList{})
}
