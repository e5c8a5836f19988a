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

package controllers

// The generated ValidatingAdmissionPolicy against checkPolicies, in a real kube-apiserver (envtest): every
// case of policyCases must get the same verdict and the same message from `kubectl apply` as from the
// reconcile.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

var (
	envClient client.Client
	envConfig *rest.Config
)

func TestMain(m *testing.M) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run `make test-integration`")
		os.Exit(2)
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:        []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 3 * time.Minute,
	}
	cfg, err := env.Start()
	envConfig = cfg
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		os.Exit(1)
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	if envClient, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		_ = env.Stop()
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// TestAdmissionPolicyAgreesWithReconcile runs every policy case through the API server. Each case gets a
// namespace of its own, with the case's labels and "case: N", and its policies select only that namespace
// (their selectors gain "case: N") and carry its number in their names; so all cases of one default share
// one admission policy, written once.
func TestAdmissionPolicyAgreesWithReconcile(t *testing.T) {
	ctx := context.Background()
	cases := policyCases()
	type prepared struct {
		tc     policyCase
		ns     string
		labels map[string]string
		pf     *v1alpha1.PortForward
	}
	groups := map[PolicyDefault][]prepared{}
	var policies = map[PolicyDefault][]v1alpha1.PortForwardPolicy{}
	run := time.Now().UnixNano() % 100000
	for i, tc := range cases {
		ns := fmt.Sprintf("vap%d-%d", run, i)
		labels := map[string]string{"case": ns}
		for k, v := range tc.ns {
			if k != corev1.LabelMetadataName {
				labels[k] = v
			}
		}
		if err := envClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}); err != nil {
			t.Fatal(err)
		}
		labels[corev1.LabelMetadataName] = ns // the API server adds it
		for _, p := range tc.policies {
			p = *p.DeepCopy()
			p.Name = fmt.Sprintf("c%d-%s", i, p.Name)
			if p.Spec.NamespaceSelector.MatchLabels == nil {
				p.Spec.NamespaceSelector.MatchLabels = map[string]string{}
			}
			p.Spec.NamespaceSelector.MatchLabels["case"] = ns
			policies[tc.def] = append(policies[tc.def], p)
		}
		pf := basePF()
		pf.Namespace, pf.Name, pf.UID, pf.Generation = ns, "pf", "", 0
		if tc.mutate != nil {
			tc.mutate(pf)
		}
		groups[tc.def] = append(groups[tc.def], prepared{tc, ns, labels, pf})
	}
	t.Cleanup(func() {
		envClient.Delete(ctx, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: AdmissionPolicyName}})
		envClient.Delete(ctx, &admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: AdmissionPolicyName}})
	})

	// Allow first: before any admission policy everything is allowed, and under the allow policy the deny
	// group's namespaces (selected by no allow-group policy) are too, so a denial of a group's first denied
	// case shows that the group's policy is in force.
	for _, def := range []PolicyDefault{PolicyDefaultAllow, PolicyDefaultDeny} {
		group := groups[def]
		if err := envClient.Apply(ctx, desiredAdmissionPolicy(policies[def], def, "ssmtunnel-tunnel"), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			t.Fatalf("apply the admission policy (%s): %v", def, err)
		}
		if err := envClient.Apply(ctx, desiredAdmissionPolicyBinding(AdmissionPolicyName), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			t.Fatalf("apply the binding: %v", err)
		}
		var canary *prepared
		for i := range group {
			if checkPolicies(group[i].pf, group[i].labels, policies[def], def, "ssmtunnel-tunnel").denied != "" {
				canary = &group[i]
				break
			}
		}
		if canary == nil {
			t.Fatalf("group %s has no denied case to tell that its policy is in force", def)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := envClient.Create(ctx, canary.pf.DeepCopy(), client.DryRunAll)
			if err != nil && strings.Contains(err.Error(), "PortForwardPolicy:") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the %s admission policy is not in force after 30 s: %s still gets %v", def, canary.tc.name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, c := range group {
			t.Run(string(def)+"/"+c.tc.name, func(t *testing.T) {
				want := checkPolicies(c.pf, c.labels, policies[def], def, "ssmtunnel-tunnel").denied
				err := envClient.Create(ctx, c.pf.DeepCopy(), client.DryRunAll)
				switch {
				case want == "" && err != nil:
					t.Errorf("the reconcile allows it, the API server refuses it: %v", err)
				case want != "" && err == nil:
					t.Errorf("the reconcile denies it (%s), the API server accepts it", want)
				case want != "" && !strings.Contains(err.Error(), "PortForwardPolicy: "+want):
					t.Errorf("messages differ:\n  reconcile: %s\n  admission: %v", want, err)
				}
				if (want != "") != (c.tc.denied != "") {
					t.Errorf("the case expects denied=%t, the reconcile says %q", c.tc.denied != "", want)
				}
			})
		}
	}
}

// TestDeploymentAdmissionPolicy: the operator's identity may write Deployments only with a ServiceAccount
// that a policy granting the namespace allows (the default tunnel ServiceAccount or one it names); another
// identity is not judged by this policy at all.
func TestDeploymentAdmissionPolicy(t *testing.T) {
	ctx := context.Background()
	const operator = "system:serviceaccount:ssmtunnel-system:ssmtunnel"
	run := time.Now().UnixNano() % 100000
	granted, other := fmt.Sprintf("dep%d-granted", run), fmt.Sprintf("dep%d-other", run)
	for _, ns := range []string{granted, other} {
		if err := envClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": ns}}}); err != nil {
			t.Fatal(err)
		}
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("dep%d-operator", run)},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: operator}},
	}
	if err := envClient.Create(ctx, crb); err != nil {
		t.Fatal(err)
	}
	policies := []v1alpha1.PortForwardPolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "granted"},
		Spec: v1alpha1.PortForwardPolicySpec{
			NamespaceSelector:   metav1.LabelSelector{MatchLabels: map[string]string{"team": granted}},
			InstanceIDs:         []string{"*"},
			ServiceAccountNames: []string{"db-reader"},
		},
	}}
	vap := desiredDeploymentAdmissionPolicy(policies, PolicyDefaultDeny, "ssmtunnel-tunnel", operator)
	t.Cleanup(func() {
		envClient.Delete(ctx, crb)
		envClient.Delete(ctx, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: DeploymentAdmissionPolicyName}})
		envClient.Delete(ctx, &admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: DeploymentAdmissionPolicyName}})
	})
	if err := envClient.Apply(ctx, vap, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		t.Fatal(err)
	}
	if err := envClient.Apply(ctx, desiredAdmissionPolicyBinding(DeploymentAdmissionPolicyName), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		t.Fatal(err)
	}
	asOperator := rest.CopyConfig(envConfig)
	asOperator.Impersonate = rest.ImpersonationConfig{UserName: operator, Groups: []string{"system:serviceaccounts", "system:authenticated"}}
	opClient, err := client.New(asOperator, client.Options{Scheme: envClient.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	deployment := func(ns, sa string, replicas int32) *appsv1.Deployment {
		labels := map[string]string{"app": "tunnel"}
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tunnel"},
			Spec: appsv1.DeploymentSpec{
				Replicas: &replicas,
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "tunnel", Image: "tunnel"}}},
				},
			},
		}
	}
	refusal := func(ns, sa string) string {
		return "PortForwardPolicy: the operator may not run tunnel pods as ServiceAccount " + sa + " in namespace " + ns +
			": no PortForwardPolicy that grants the namespace allows it"
	}
	// The canary: once it is refused, the policy is in force.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := opClient.Create(ctx, deployment(granted, "admin", 2), client.DryRunAll)
		if err != nil && strings.Contains(err.Error(), "PortForwardPolicy:") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Deployment admission policy is not in force after 30 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, tc := range []struct {
		name     string
		c        client.Client
		ns, sa   string
		replicas int32
		denied   bool
	}{
		{"default tunnel ServiceAccount in a granted namespace", opClient, granted, "ssmtunnel-tunnel", 2, false},
		{"a ServiceAccount the policy names", opClient, granted, "db-reader", 2, false},
		{"a ServiceAccount the policy does not name", opClient, granted, "admin", 2, true},
		{"no serviceAccountName is the namespace's default ServiceAccount", opClient, granted, "", 2, true},
		{"a namespace no policy grants, under deny", opClient, other, "ssmtunnel-tunnel", 2, true},
		{"scaled to zero (how a denied PortForward stops) always passes", opClient, other, "admin", 0, false},
		{"another identity is not judged", envClient, granted, "admin", 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Create(ctx, deployment(tc.ns, tc.sa, tc.replicas), client.DryRunAll)
			sa := tc.sa
			if sa == "" {
				sa = "default"
			}
			switch {
			case !tc.denied && err != nil:
				t.Errorf("refused: %v", err)
			case tc.denied && err == nil:
				t.Errorf("accepted")
			case tc.denied && !strings.Contains(err.Error(), refusal(tc.ns, sa)):
				t.Errorf("message %v, want %q", err, refusal(tc.ns, sa))
			}
		})
	}
}
