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
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
	"github.com/ssmtunnel/ssmtunnel/controllers"
)

func deploymentReplicas(t *testing.T, ns, name string, want int32) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("Deployment %s at %d replicas", name, want), func() error {
		d := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, key(ns, name), d); err != nil {
			return err
		}
		if got := ptr.Deref(d.Spec.Replicas, -1); got != want {
			return fmt.Errorf("replicas %d", got)
		}
		return nil
	})
}

// TestPolicyTightenedAndLoosened: a policy that stops allowing an existing PortForward moves it to
// PolicyDenied and its Deployment to zero replicas; allowing it again brings both back. Namespace labels
// count as policy input too.
func TestPolicyTightenedAndLoosened(t *testing.T) {
	ns := newNamespace(t)
	opts := testOptions()
	opts.PolicyDefault = controllers.PolicyDefaultDeny
	startManager(t, ns, opts, nil)
	policyName := "p-" + ns
	p := &v1alpha1.PortForwardPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: v1alpha1.PortForwardPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
			InstanceIDs:       []string{"i-0123456789abcdef0"}, RemotePorts: []string{"5432"},
		},
	}
	if err := k8sClient.Create(ctx, p); err != nil {
		t.Fatalf("create policy: %v", err)
	}
	t.Cleanup(func() { k8sClient.Delete(ctx, p) })
	if err := k8sClient.Create(ctx, newPF(ns, "db", func(pf *v1alpha1.PortForward) { pf.Spec.Replicas = ptr.To[int32](2) })); err != nil {
		t.Fatal(err)
	}
	deploymentReplicas(t, ns, "db", 2)
	waitCondition(t, ns, "db", v1alpha1.ConditionReady, "False/Unavailable", 20*time.Second)

	// Tightened: port 5432 is no longer allowed.
	eventually(t, 10*time.Second, "tighten the policy", func() error {
		cur := &v1alpha1.PortForwardPolicy{}
		if err := k8sClient.Get(ctx, key("", policyName), cur); err != nil {
			return err
		}
		cur.Spec.RemotePorts = []string{"6379"}
		return k8sClient.Update(ctx, cur)
	})
	c := waitCondition(t, ns, "db", v1alpha1.ConditionReady, "False/PolicyDenied", 20*time.Second)
	if want := policyName + ": remotePort 5432 (it allows remote ports 6379)"; !strings.Contains(c.Message, want) {
		t.Errorf("PolicyDenied message %q lacks %q", c.Message, want)
	}
	waitCondition(t, ns, "db", v1alpha1.ConditionDegraded, "True/PolicyDenied", 10*time.Second)
	deploymentReplicas(t, ns, "db", 0)
	eventually(t, 10*time.Second, "PolicyDenied event", func() error { return warningEvent(ns, "db", "PolicyDenied") })

	// Loosened again: back to two replicas.
	eventually(t, 10*time.Second, "loosen the policy", func() error {
		cur := &v1alpha1.PortForwardPolicy{}
		if err := k8sClient.Get(ctx, key("", policyName), cur); err != nil {
			return err
		}
		cur.Spec.RemotePorts = []string{"5000-6000"}
		return k8sClient.Update(ctx, cur)
	})
	deploymentReplicas(t, ns, "db", 2)
	waitCondition(t, ns, "db", v1alpha1.ConditionReady, "False/Unavailable", 20*time.Second)

	// A policy that selects by a namespace label: relabelling the namespace denies the PortForward.
	eventually(t, 10*time.Second, "select by label", func() error {
		cur := &v1alpha1.PortForwardPolicy{}
		if err := k8sClient.Get(ctx, key("", policyName), cur); err != nil {
			return err
		}
		cur.Spec.NamespaceSelector = metav1.LabelSelector{MatchLabels: map[string]string{"tunnels": ns}}
		return k8sClient.Update(ctx, cur)
	})
	waitCondition(t, ns, "db", v1alpha1.ConditionReady, "False/PolicyDenied", 20*time.Second)
	eventually(t, 10*time.Second, "label the namespace", func() error {
		n := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, key("", ns), n); err != nil {
			return err
		}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels["tunnels"] = ns
		return k8sClient.Update(ctx, n)
	})
	waitCondition(t, ns, "db", v1alpha1.ConditionReady, "False/Unavailable", 20*time.Second)
	deploymentReplicas(t, ns, "db", 2)
}
