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
	"os"
	"path/filepath"
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
	// The operator rewrites the admission policy from it, and the API server loads that a moment later.
	probe := &v1alpha1.PortForward{
		ObjectMeta: metav1.ObjectMeta{Name: "policy-probe", Namespace: nsApps},
		Spec: v1alpha1.PortForwardSpec{Target: v1alpha1.Target{InstanceID: instanceID},
			Ports: []v1alpha1.PortSpec{{Name: "app", Port: 80, RemotePort: webPort}}},
	}
	waitFor(ctx, t, time.Minute, "the admission policy to allow namespace "+nsApps, func(ctx context.Context) (bool, string, error) {
		err := s.k.c.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		if err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
}

// policyFences: in a namespace no policy grants, kubectl apply of a PortForward is refused with the
// policy's message (the chart's default is deny); a policy that grants it lets it in; when the policy is
// withdrawn, the running PortForward moves to PolicyDenied and its tunnel pods to zero, and back when it is
// granted again; a metadata address is refused by the API server whatever the policies say.
func (s *suite) policyFences(ctx context.Context, t testing.TB) {
	ensureNamespace(ctx, t, s.k, nsTeamB, restricted)
	manifest := filepath.Join(t.TempDir(), "db.yaml")
	if err := os.WriteFile(manifest, []byte(fmt.Sprintf(`apiVersion: ssmtunnel.io/v1alpha1
kind: PortForward
metadata:
  name: db
  namespace: %s
spec:
  target:
    instanceID: %s
  ports:
    - name: app
      port: 80
      remotePort: %d
  replicas: 1
`, nsTeamB, instanceID, webPort)), 0o644); err != nil {
		t.Fatal(err)
	}
	apply := func() (string, error) {
		return run(ctx, s.e.kubectl(), "--kubeconfig", s.e.kubeconfig, "apply", "-f", manifest)
	}
	// The operator writes the admission policy at start; it is in force a moment later.
	var out string
	waitFor(ctx, t, time.Minute, "kubectl apply in team-b to be refused by the admission policy", func(ctx context.Context) (bool, string, error) {
		var err error
		out, err = apply()
		if err == nil {
			_ = s.k.c.Delete(ctx, &v1alpha1.PortForward{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: nsTeamB}})
			return false, "accepted", nil
		}
		return strings.Contains(out, "PortForwardPolicy: no PortForwardPolicy grants namespace "+nsTeamB), out, nil
	})
	t.Logf("kubectl apply in %s without a policy:\n%s", nsTeamB, out)
	fmt.Printf("kubectl apply in %s without a policy:\n%s\n", nsTeamB, out)

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
	defer s.k.c.Delete(context.Background(), &v1alpha1.PortForwardPolicy{ObjectMeta: metav1.ObjectMeta{Name: "team-b"}})
	waitFor(ctx, t, time.Minute, "kubectl apply in team-b to be accepted under policy team-b", func(ctx context.Context) (bool, string, error) {
		out, err := apply()
		return err == nil, out, nil
	})
	pf := &v1alpha1.PortForward{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: nsTeamB}}
	reason := func(ctx context.Context) (string, string, error) {
		var got v1alpha1.PortForward
		if err := s.k.c.Get(ctx, client.ObjectKeyFromObject(pf), &got); err != nil {
			return "", "", err
		}
		c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady)
		if c == nil {
			return "", "no Ready condition", nil
		}
		return c.Reason, c.Reason + ": " + c.Message, nil
	}
	replicasOf := func(ctx context.Context) (int32, error) {
		var d appsv1.Deployment
		if err := s.k.c.Get(ctx, client.ObjectKeyFromObject(pf), &d); err != nil {
			return -1, err
		}
		return ptr.Deref(d.Spec.Replicas, -1), nil
	}
	waitFor(ctx, t, time.Minute, "the Deployment of team-b/db at 1 replica", func(ctx context.Context) (bool, string, error) {
		n, err := replicasOf(ctx)
		return n == 1, fmt.Sprintf("replicas %d", n), err
	})

	// Withdrawn: the running PortForward is denied at reconcile and scaled to zero.
	if err := s.k.c.Delete(ctx, grant); err != nil {
		t.Fatalf("delete policy team-b: %v", err)
	}
	waitFor(ctx, t, time.Minute, "team-b/db: Ready False/PolicyDenied, Deployment at 0", func(ctx context.Context) (bool, string, error) {
		r, state, err := reason(ctx)
		if err != nil || r != v1alpha1.ReasonPolicyDenied {
			return false, state, err
		}
		n, err := replicasOf(ctx)
		return n == 0, fmt.Sprintf("%s; replicas %d", state, n), err
	})
	// Granted again: it recovers without being touched.
	grant.ResourceVersion = ""
	if err := s.k.c.Create(ctx, grant); err != nil {
		t.Fatalf("recreate policy team-b: %v", err)
	}
	waitFor(ctx, t, time.Minute, "team-b/db out of PolicyDenied, Deployment back at 1", func(ctx context.Context) (bool, string, error) {
		r, state, err := reason(ctx)
		if err != nil || r == v1alpha1.ReasonPolicyDenied {
			return false, state, err
		}
		n, err := replicasOf(ctx)
		return n == 1, fmt.Sprintf("%s; replicas %d", state, n), err
	})
	out, err := run(ctx, s.e.kubectl(), "--kubeconfig", s.e.kubeconfig, "get", "portforwardpolicies", "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl get portforwardpolicies -o wide:\n%s", out)
	fmt.Printf("kubectl get portforwardpolicies -o wide:\n%s\n", out)

	// The metadata service, in any spelling, is refused at admission in every namespace.
	for _, host := range []string{"169.254.169.254", "2852039166", "fd00:ec2::254"} {
		bad := &v1alpha1.PortForward{
			ObjectMeta: metav1.ObjectMeta{Name: "imds", Namespace: nsApps},
			Spec: v1alpha1.PortForwardSpec{Target: v1alpha1.Target{InstanceID: instanceID}, RemoteHost: host,
				Ports: []v1alpha1.PortSpec{{Name: "app", Port: 80, RemotePort: 80}}},
		}
		err := s.k.c.Create(ctx, bad)
		if err == nil {
			t.Errorf("remoteHost %s was accepted", host)
			_ = s.k.c.Delete(ctx, bad)
			continue
		}
		t.Logf("remoteHost %s: %v", host, err)
		if !strings.Contains(err.Error(), "remoteHost must not") {
			t.Errorf("remoteHost %s refused with %q, want the rule's message", host, err)
		}
	}
	if err := s.k.c.Delete(ctx, pf); err != nil {
		t.Errorf("delete team-b/db: %v", err)
	}
}
