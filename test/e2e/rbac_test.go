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
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// operatorDeploymentsFenced: RBAC lets the operator create Deployments; the admission policies let it
// create only tunnel Deployments. Copies of the tunnel Deployment, as the operator, each changed in one way
// so that exactly one policy refuses it: another image (the chart's guard), and a ServiceAccount no
// PortForwardPolicy allows (the operator's generated policy).
func (s *suite) operatorDeploymentsFenced(ctx context.Context, t testing.TB, as string) {
	var deps appsv1.DeploymentList
	if err := s.k.c.List(ctx, &deps, client.InNamespace(nsApps), client.MatchingLabels{"app.kubernetes.io/instance": pfName}); err != nil {
		t.Fatal(err)
	}
	if len(deps.Items) != 1 {
		t.Fatalf("want the tunnel Deployment of %s/%s, found %d", nsApps, pfName, len(deps.Items))
	}
	cfg := rest.CopyConfig(s.k.cfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: as}
	asOperator, err := client.New(cfg, client.Options{Scheme: s.k.c.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what, want string
		change     func(*appsv1.Deployment)
	}{
		{"image localhost/anything:1", "the operator may only run the tunnel image", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].Image = "localhost/anything:1"
		}},
		{"serviceAccountName default", "the operator may not run tunnel pods as ServiceAccount default in namespace " + nsApps, func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.ServiceAccountName = "default"
		}},
	} {
		d := deps.Items[0].DeepCopy()
		d.ObjectMeta = metav1.ObjectMeta{Namespace: nsApps, Name: "probe-fence", Labels: d.Labels}
		c.change(d)
		err := asOperator.Create(ctx, d, client.DryRunAll)
		t.Logf("the tunnel Deployment with %s, as %s: %v", c.what, as, err)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("the operator's ServiceAccount created the tunnel Deployment with %s (want refused with %q): %v", c.what, c.want, err)
		}
	}
}

// watchNamespacesRBAC renders the chart's RBAC with watchNamespaces as a second release, applies it, and
// asks the API server what its ServiceAccount may do: the operator's namespaced permissions must hold in
// the watched namespace only.
func (s *suite) watchNamespacesRBAC(ctx context.Context, t testing.TB) {
	const probe = release + "-rbac-probe" // its own ClusterRole, Roles and ServiceAccount; no Deployment
	out, err := runStdout(ctx, s.e.helm, "template", probe, filepath.Join(s.e.root, "charts", "ssmtunnel"),
		"--namespace", nsOperator, "--set", "watchNamespaces={"+nsApps+"}", "--set", "image.registry="+s.e.registry,
		"--show-only", "templates/rbac.yaml", "--show-only", "templates/serviceaccount.yaml")
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	manifest := filepath.Join(s.dir, "rbac-probe.yaml")
	if err := os.WriteFile(manifest, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl := func(args ...string) (string, error) {
		return run(ctx, s.e.kubectl(), append([]string{"--kubeconfig", s.e.kubeconfig}, args...)...)
	}
	if out, err := kubectl("apply", "-f", manifest); err != nil {
		t.Fatalf("kubectl apply the rendered RBAC: %v\n%s", err, out)
	}
	defer func() {
		if out, err := kubectl("delete", "--ignore-not-found", "-f", manifest); err != nil {
			t.Errorf("kubectl delete the rendered RBAC: %v\n%s", err, out)
		}
	}()
	as := fmt.Sprintf("system:serviceaccount:%s:%s", nsOperator, probe)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "deployments.apps", "-n", nsApps}, "yes"},
		{[]string{"watch", "portforwards.ssmtunnel.io", "-n", nsApps}, "yes"},
		{[]string{"create", "deployments.apps", "-n", nsTeamB}, "no"},
		{[]string{"create", "deployments.apps", "-n", "default"}, "no"},
		{[]string{"create", "deployments.apps", "-n", nsOperator}, "no"},
		{[]string{"list", "portforwards.ssmtunnel.io", "--all-namespaces"}, "no"},
		{[]string{"create", "services", "-n", nsTeamB}, "no"},
		{[]string{"list", "pods", "--all-namespaces"}, "no"},
		// The cluster-scoped objects it reads or writes stay cluster-wide.
		{[]string{"list", "namespaces"}, "yes"},
		{[]string{"list", "portforwardpolicies.ssmtunnel.io"}, "yes"},
	} {
		got := canI(ctx, t, s.e.kubectl(), s.e.kubeconfig, as, c.args...)
		t.Logf("kubectl auth can-i %s --as %s: %s", strings.Join(c.args, " "), as, got)
		if got != c.want {
			t.Errorf("with watchNamespaces={%s}: kubectl auth can-i %s as the operator: %q, want %q", nsApps, strings.Join(c.args, " "), got, c.want)
		}
	}
}

// canI is `kubectl auth can-i` as user as: "yes" or "no". Exit status 1 means "no", so it is no error
// here, but an empty answer (the API server unreachable) is.
func canI(ctx context.Context, t testing.TB, kubectl, kubeconfig, as string, args ...string) string {
	full := append([]string{"--kubeconfig", kubeconfig, "auth", "can-i", "--as", as}, args...)
	cmd := exec.CommandContext(ctx, kubectl, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	answer := strings.TrimSpace(stdout.String())
	if answer == "" {
		t.Fatalf("kubectl auth can-i %s gave no answer: %s", strings.Join(args, " "), stderr.String())
	}
	return answer
}
