//go:build e2e

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

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

const (
	// e2ePolicy grants the suite's namespaces (label ssmtunnel.io/e2e) the emulated instances: the chart
	// installs the operator with policy.default=deny.
	e2ePolicy = "ssmtunnel-e2e"
	// nsTeamB is a namespace no policy grants at first.
	nsTeamB = "ssmtunnel-e2e-team-b"
)

// grantE2ENamespaces creates the policy the rest of the suite runs under.
func (s *suite) grantE2ENamespaces(ctx context.Context, t testing.TB) {
	p := &v1alpha1.PortForwardPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: e2ePolicy},
		Spec: v1alpha1.PortForwardPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "ssmtunnel.io/e2e", Operator: metav1.LabelSelectorOpIn, Values: []string{"apps", "denied"}}}},
			InstanceIDs: []string{instanceID, offlineInstanceID},
		},
	}
	if err := s.k.c.Delete(ctx, p); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete an earlier run's policy: %v", err)
	}
	if err := s.k.c.Create(ctx, p); err != nil {
		t.Fatalf("create PortForwardPolicy %s: %v", e2ePolicy, err)
	}
}

// policyFences: a namespace no policy grants gets PolicyDenied and no tunnel pods under the chart's
// default deny; a policy that grants it lifts that without touching the PortForward; a metadata address
// is refused by the API server whatever the policies say.
func (s *suite) policyFences(ctx context.Context, t testing.TB) {
	ensureNamespace(ctx, t, s.k, nsTeamB, restricted)
	pf := &v1alpha1.PortForward{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: nsTeamB},
		Spec: v1alpha1.PortForwardSpec{
			Target:   v1alpha1.Target{InstanceID: instanceID},
			Ports:    []v1alpha1.PortSpec{{Name: "app", Port: 80, RemotePort: webPort}},
			Replicas: ptr.To[int32](1),
		},
	}
	if err := s.k.c.Create(ctx, pf); err != nil {
		t.Fatalf("create PortForward in %s: %v", nsTeamB, err)
	}
	condition := func(want string) func(ctx context.Context) (bool, string, error) {
		return func(ctx context.Context) (bool, string, error) {
			var got v1alpha1.PortForward
			if err := s.k.c.Get(ctx, client.ObjectKeyFromObject(pf), &got); err != nil {
				return false, "", err
			}
			c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady)
			if c == nil {
				return false, "no Ready condition", nil
			}
			return (c.Reason == v1alpha1.ReasonPolicyDenied) == (want == v1alpha1.ReasonPolicyDenied), c.Reason + ": " + c.Message, nil
		}
	}
	replicasOf := func(ctx context.Context) (int32, error) {
		var d appsv1.Deployment
		if err := s.k.c.Get(ctx, client.ObjectKeyFromObject(pf), &d); err != nil {
			return -1, err
		}
		return ptr.Deref(d.Spec.Replicas, -1), nil
	}
	waitFor(ctx, t, time.Minute, "PortForward team-b/db: Ready False/PolicyDenied", condition(v1alpha1.ReasonPolicyDenied))
	var got v1alpha1.PortForward
	if err := s.k.c.Get(ctx, client.ObjectKeyFromObject(pf), &got); err != nil {
		t.Fatal(err)
	}
	t.Logf("team-b: %s", got.Status.Message)
	if !strings.Contains(got.Status.Message, "no PortForwardPolicy grants namespace "+nsTeamB) {
		t.Errorf("PolicyDenied message %q does not say that no policy grants %s", got.Status.Message, nsTeamB)
	}
	if n, err := replicasOf(ctx); err != nil || n != 0 {
		t.Errorf("a denied PortForward's Deployment has %d replicas (%v), want 0", n, err)
	}

	// A policy for team-b: the PortForward is allowed, and its Deployment gets its replica back.
	grant := &v1alpha1.PortForwardPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "team-b"},
		Spec: v1alpha1.PortForwardPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": nsTeamB}},
			InstanceIDs:       []string{instanceID}, RemotePorts: []string{fmt.Sprint(webPort)},
		},
	}
	_ = s.k.c.Delete(ctx, grant)
	if err := s.k.c.Create(ctx, grant); err != nil {
		t.Fatalf("create policy team-b: %v", err)
	}
	defer s.k.c.Delete(context.Background(), grant)
	waitFor(ctx, t, time.Minute, "PortForward team-b/db no longer PolicyDenied", condition("allowed"))
	waitFor(ctx, t, time.Minute, "the Deployment of team-b/db back at 1 replica", func(ctx context.Context) (bool, string, error) {
		n, err := replicasOf(ctx)
		return n == 1, fmt.Sprintf("replicas %d", n), err
	})

	// The metadata service, in any spelling, is refused at admission in every namespace.
	for _, host := range []string{"169.254.169.254", "2852039166", "fd00:ec2::254"} {
		bad := pf.DeepCopy()
		bad.ObjectMeta = metav1.ObjectMeta{Name: "imds", Namespace: nsApps}
		bad.Spec.RemoteHost = host
		err := s.k.c.Create(ctx, bad)
		if err == nil {
			t.Errorf("remoteHost %s was accepted", host)
			_ = s.k.c.Delete(ctx, bad)
			continue
		}
		t.Logf("kubectl apply remoteHost %s: %v", host, err)
		if !strings.Contains(err.Error(), "remoteHost must not") {
			t.Errorf("remoteHost %s refused with %q, want the rule's message", host, err)
		}
	}
	if err := s.k.c.Delete(ctx, pf); err != nil {
		t.Errorf("delete team-b/db: %v", err)
	}
}
