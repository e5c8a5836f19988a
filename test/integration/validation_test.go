//go:build integration

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

package integration

import (
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

// TestInvalidPortForwardsRejected: the API server rejects each invalid PortForward with a message that says
// what to fix (CEL rules and OpenAPI bounds of the CRD).
func TestInvalidPortForwardsRejected(t *testing.T) {
	ns := newNamespace(t)
	port := func(name string, port, remote int32) v1alpha1.PortSpec {
		return v1alpha1.PortSpec{Name: name, Port: port, RemotePort: remote}
	}
	tests := []struct {
		name    string
		pfName  string
		mutate  func(pf *v1alpha1.PortForward)
		message string
	}{
		{name: "no target", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Target = v1alpha1.Target{} },
			message: "target needs exactly one of instanceID or selector"},
		{name: "both kinds of target", mutate: func(pf *v1alpha1.PortForward) {
			pf.Spec.Target.Selector = &v1alpha1.InstanceSelector{Tags: map[string]string{"role": "db"}}
		}, message: "target needs exactly one of instanceID or selector"},
		{name: "instance ID too short", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Target.InstanceID = "i-1234567" },
			message: "instanceID must be i- followed by 8 or 17 lowercase hex digits"},
		{name: "instance ID upper case", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Target.InstanceID = "i-0123456789ABCDEF0" },
			message: "instanceID must be i- followed by 8 or 17 lowercase hex digits"},
		{name: "instance ID with 10 hex digits", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Target.InstanceID = "i-0123456789" },
			message: "instanceID must be i- followed by 8 or 17 lowercase hex digits"},
		{name: "managed instance ID with 8 hex digits", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Target.InstanceID = "mi-01234567" },
			message: "instanceID must be i- followed by 8 or 17 lowercase hex digits"},
		{name: "instance ID wrong prefix", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Target.InstanceID = "x-0123456789abcdef0" },
			message: "instanceID must be i- followed by 8 or 17 lowercase hex digits"},
		{name: "selector without tags", mutate: func(pf *v1alpha1.PortForward) {
			pf.Spec.Target = v1alpha1.Target{Selector: &v1alpha1.InstanceSelector{Tags: map[string]string{}}}
		}, message: "spec.target.selector.tags: Invalid value"},
		{name: "no ports", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Ports = []v1alpha1.PortSpec{} },
			message: "spec.ports in body should have at least 1 items"},
		{name: "17 ports", mutate: func(pf *v1alpha1.PortForward) {
			pf.Spec.Ports = nil
			for i := range 17 {
				pf.Spec.Ports = append(pf.Spec.Ports, port(fmt.Sprintf("p%d", i), int32(1000+i), 80))
			}
		}, message: "must have at most 16 items"},
		{name: "duplicate port names", mutate: func(pf *v1alpha1.PortForward) {
			pf.Spec.Ports = append(pf.Spec.Ports, port("postgres", 5433, 5433))
		}, message: "ports[].name values must be unique"},
		{name: "duplicate port numbers", mutate: func(pf *v1alpha1.PortForward) {
			pf.Spec.Ports = append(pf.Spec.Ports, port("replica", 5432, 5433))
		}, message: "ports[].port values must be unique"},
		{name: "port 0", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Ports[0].Port = 0 },
			message: "spec.ports[0].port in body should be greater than or equal to 1"},
		{name: "port above 65535", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Ports[0].Port = 70000 },
			message: "spec.ports[0].port in body should be less than or equal to 65535"},
		{name: "remote port above 65535", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Ports[0].RemotePort = 65536 },
			message: "spec.ports[0].remotePort in body should be less than or equal to 65535"},
		{name: "port name with upper case", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Ports[0].Name = "Postgres" },
			message: "port name must be lowercase letters, digits and single '-'"},
		{name: "port name without a letter", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Ports[0].Name = "5432" },
			message: "port name must be lowercase letters, digits and single '-'"},
		{name: "reserved port name", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Ports[0].Name = "metrics" },
			message: "port names 'metrics' and 'health' are reserved"},
		{name: "UDP", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Ports[0].Protocol = "UDP" },
			message: `Unsupported value: "UDP": supported values: "TCP"`},
		{name: "replicas above 20", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Replicas = ptr.To[int32](21) },
			message: "spec.replicas in body should be less than or equal to 20"},
		{name: "negative replicas", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Replicas = ptr.To[int32](-1) },
			message: "spec.replicas in body should be greater than or equal to 0"},
		{name: "too many sessions", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.SessionsPerReplica = ptr.To[int32](9) },
			message: "spec.sessionsPerReplica in body should be less than or equal to 8"},
		{name: "remote host with scheme and port", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = "http://db:5432" },
			message: "remoteHost must be a DNS name"},
		{name: "remote host with underscore", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = "db_primary.internal" },
			message: "remoteHost must be a DNS name"},
		{name: "port-forwarding document with a remote host", mutate: func(pf *v1alpha1.PortForward) {
			pf.Spec.RemoteHost = "db.internal"
			pf.Spec.DocumentName = "AWS-StartPortForwardingSession"
		}, message: "documentName AWS-StartPortForwardingSession cannot reach a remoteHost"},
		{name: "region in upper case", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Region = "EU-WEST-1" },
			message: "region must be an AWS region code"},
		{name: "role ARN of a user", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.RoleARN = "arn:aws:iam::123456789012:user/bob" },
			message: "roleARN must be an IAM role ARN"},
		{name: "service account with underscore", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.ServiceAccountName = "tunnel_sa" },
			message: "serviceAccountName must be a lowercase DNS subdomain"},
		{name: "empty allowed client", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.AllowedClients = []v1alpha1.ClientPeer{{}} },
			message: "each allowedClients entry needs a namespaceSelector, a podSelector or both"},
		{name: "LoadBalancer service", mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Service.Type = "LoadBalancer" },
			message: `Unsupported value: "LoadBalancer"`},
		{name: "name that is not a DNS label", pfName: "db.primary",
			message: "metadata.name must be a DNS label starting with a letter"},
	}
	if len(tests) < 20 {
		t.Fatalf("only %d cases", len(tests))
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.pfName
			if name == "" {
				name = "bad"
			}
			pf := newPF(ns, name, tc.mutate)
			err := k8sClient.Create(ctx, pf)
			if err == nil {
				t.Fatalf("created, want rejection with %q", tc.message)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("error %q\nwant Invalid containing %q", err, tc.message)
			}
			t.Logf("rejected: %v", err)
		})
	}
}

// TestTargetKindImmutable: switching between instanceID and selector is rejected on update, while changing
// the instance ID is allowed.
func TestTargetKindImmutable(t *testing.T) {
	ns := newNamespace(t)
	pf := newPF(ns, "imm", nil)
	if err := k8sClient.Create(ctx, pf); err != nil {
		t.Fatalf("create: %v", err)
	}
	pf.Spec.Target.InstanceID = "mi-0123456789abcdef0"
	if err := k8sClient.Update(ctx, pf); err != nil {
		t.Fatalf("changing the instance ID: %v", err)
	}
	pf.Spec.Target = v1alpha1.Target{Selector: &v1alpha1.InstanceSelector{Tags: map[string]string{"role": "db"}}}
	err := k8sClient.Update(ctx, pf)
	const want = "the kind of target (instanceID or selector) cannot change: delete and recreate the PortForward"
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v\nwant Invalid containing %q", err, want)
	}
	// Valid edge cases are accepted.
	ok := newPF(ns, "edge", func(pf *v1alpha1.PortForward) {
		pf.Spec.RemoteHost = "10.0.0.12"
		pf.Spec.Target.InstanceID = "i-01234567"
		pf.Spec.Region = "us-gov-west-1"
		pf.Spec.RoleARN = "arn:aws-us-gov:iam::123456789012:role/path/tunnel"
		pf.Spec.AllowedClients = []v1alpha1.ClientPeer{{NamespaceSelector: &metav1.LabelSelector{}}}
		pf.Spec.Ports = append(pf.Spec.Ports, v1alpha1.PortSpec{Name: "a-1", Port: 65535, RemotePort: 1})
	})
	if err := k8sClient.Create(ctx, ok); err != nil {
		t.Fatalf("valid edge cases rejected: %v", err)
	}
	ipv6 := newPF(ns, "v6", func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = "fd00::12" })
	if err := k8sClient.Create(ctx, ipv6); err != nil {
		t.Fatalf("IPv6 remoteHost rejected: %v", err)
	}
}
