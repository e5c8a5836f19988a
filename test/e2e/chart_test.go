//go:build chart

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

// Consistency checks of the install manifests, run by hack/test-chart.sh (`make test-chart`) with HELM and
// KUSTOMIZE set: the chart and kustomize must say what config/ and cmd/manager say, so there is one source of
// truth for the operator's permissions, its CRDs and its flags.
package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// render runs helm template on the chart with args and returns its objects.
func render(t *testing.T, args ...string) []object {
	t.Helper()
	helm := os.Getenv("HELM")
	if helm == "" {
		t.Fatal("HELM is not set: run through hack/test-chart.sh or make test-chart")
	}
	// The source chart names no registry; the published one does.
	cmd := exec.Command(helm, append([]string{"template", "ssmtunnel", chartDir(t), "--namespace", "ssmtunnel-system",
		"--set", "image.registry=127.0.0.1:5000"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, stderr.String())
	}
	return splitYAML(t, out)
}

// kustomizeBuild runs kustomize build config/default.
func kustomizeBuild(t *testing.T) []object {
	t.Helper()
	kustomize := os.Getenv("KUSTOMIZE")
	if kustomize == "" {
		t.Fatal("KUSTOMIZE is not set: run through hack/test-chart.sh or make test-chart")
	}
	out, err := exec.Command(kustomize, "build", filepath.Join(repoRoot(t), "config", "default")).Output()
	if err != nil {
		t.Fatalf("kustomize build config/default: %v", err)
	}
	return splitYAML(t, out)
}

// permissions flattens RBAC rules into sorted "group|resource|name|verb" (or "url|verb") tuples, so two rule
// lists compare equal exactly when they grant the same, however they are grouped or ordered.
func permissions(rules []rbacv1.PolicyRule) []string {
	seen := map[string]bool{}
	for _, r := range rules {
		for _, v := range r.Verbs {
			for _, u := range r.NonResourceURLs {
				seen["url|"+u+"|"+v] = true
			}
			names := r.ResourceNames
			if len(names) == 0 {
				names = []string{""}
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, n := range names {
						seen[g+"|"+res+"|"+n+"|"+v] = true
					}
				}
			}
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// generatedManagerRules are the rules of config/rbac/role.yaml, which controller-gen writes from the
// +kubebuilder:rbac markers.
func generatedManagerRules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	var rules []rbacv1.PolicyRule
	for _, o := range readObjects(t, filepath.Join(repoRoot(t), "config", "rbac", "role.yaml")) {
		if o.Kind == "ClusterRole" {
			var cr rbacv1.ClusterRole
			o.into(t, &cr)
			rules = append(rules, cr.Rules...)
		}
	}
	return rules
}

func TestChartRBACMatchesGenerated(t *testing.T) {
	want := generatedManagerRules(t)
	if len(want) == 0 {
		t.Fatal("config/rbac/role.yaml has no ClusterRole rules: run 'make manifests'")
	}
	objs := render(t)
	var cr rbacv1.ClusterRole
	find(t, objs, "ClusterRole", "ssmtunnel-manager").into(t, &cr)
	if diff := cmp.Diff(permissions(want), permissions(cr.Rules)); diff != "" {
		t.Errorf("chart ClusterRole ssmtunnel-manager grants other permissions than config/rbac/role.yaml "+
			"(controller-gen from the +kubebuilder:rbac markers); copy the rules of role.yaml into "+
			"charts/ssmtunnel/templates/rbac.yaml (-role.yaml +chart):\n%s", diff)
	}
	for _, p := range permissions(cr.Rules) {
		if strings.HasPrefix(p, "|secrets|") {
			t.Errorf("the operator must not be able to touch Secrets, but the chart grants %q", p)
		}
	}
}

// With watchNamespaces, the operator's namespaced permissions are Roles in those namespaces only: its
// ClusterRole keeps the cluster-scoped objects, and the union is still config/rbac/role.yaml.
func TestChartNamespacedRBAC(t *testing.T) {
	want := generatedManagerRules(t)
	objs := render(t, "--set", "watchNamespaces={team-a,team-b}")
	var cr rbacv1.ClusterRole
	find(t, objs, "ClusterRole", "ssmtunnel-manager").into(t, &cr)
	union := append([]rbacv1.PolicyRule(nil), cr.Rules...)
	for _, p := range permissions(cr.Rules) {
		switch strings.SplitN(p, "|", 3)[1] {
		case "namespaces", "portforwardpolicies", "validatingadmissionpolicies", "validatingadmissionpolicybindings":
		default:
			t.Errorf("with watchNamespaces the ClusterRole still grants %q everywhere", p)
		}
	}
	roles := map[string]bool{}
	for _, o := range objs {
		if o.Kind != "Role" {
			continue
		}
		var r rbacv1.Role
		o.into(t, &r)
		if r.Name != "ssmtunnel-manager" {
			continue
		}
		roles[r.Namespace] = true
		if diff := cmp.Diff(permissions(want), permissions(append(append([]rbacv1.PolicyRule(nil), cr.Rules...), r.Rules...))); diff != "" {
			t.Errorf("in %s, ClusterRole + Role differ from config/rbac/role.yaml (-role.yaml +chart):\n%s", r.Namespace, diff)
		}
		union = append(union, r.Rules...)
	}
	if !roles["team-a"] || !roles["team-b"] || len(roles) != 2 {
		t.Errorf("manager Roles in %v, want team-a and team-b", roles)
	}
	for _, p := range permissions(union) {
		if strings.HasPrefix(p, "|secrets|") {
			t.Errorf("the operator must not be able to touch Secrets, but the chart grants %q", p)
		}
	}
}

func TestChartLeaderElectionRoleMatchesConfig(t *testing.T) {
	path := filepath.Join(repoRoot(t), "config", "rbac", "leader_election_role.yaml")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("config/rbac/leader_election_role.yaml: %v", err)
	}
	var want, got rbacv1.Role
	find(t, readObjects(t, path), "Role", "").into(t, &want)
	find(t, render(t), "Role", "ssmtunnel-leader-election").into(t, &got)
	if diff := cmp.Diff(permissions(want.Rules), permissions(got.Rules)); diff != "" {
		t.Errorf("chart leader-election Role differs from config/rbac/leader_election_role.yaml (-config +chart):\n%s", diff)
	}
}

func TestChartCRDsMatchGenerated(t *testing.T) {
	bases, err := filepath.Glob(filepath.Join(repoRoot(t), "config", "crd", "bases", "*.yaml"))
	if err != nil || len(bases) == 0 {
		t.Fatalf("no CRDs in config/crd/bases (%v): run 'make manifests'", err)
	}
	for _, b := range bases {
		want, err := os.ReadFile(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(chartDir(t), "crds", filepath.Base(b)))
		if err != nil {
			t.Errorf("chart lacks CRD %s: run 'make manifests': %v", filepath.Base(b), err)
			continue
		}
		if !bytes.Equal(want, got) {
			t.Errorf("charts/ssmtunnel/crds/%s differs from config/crd/bases: run 'make manifests'", filepath.Base(b))
		}
	}
}

// managerFlags builds cmd/manager and returns the flags its --help lists.
func managerFlags(t *testing.T) map[string]bool {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "manager")
	build := exec.Command("go", "build", "-o", bin, "./cmd/manager")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/manager: %v\n%s", err, out)
	}
	out, _ := exec.Command(bin, "--help").CombinedOutput() // flag's --help exits 0 or 2
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+--?([a-zA-Z0-9][a-zA-Z0-9._-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) < 3 {
		t.Fatalf("could not read the manager's flags from --help:\n%s", out)
	}
	return flags
}

// argFlags returns the flag names in args ("--name=value" or "--name").
func argFlags(args []string) []string {
	var out []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		out = append(out, name)
	}
	return out
}

func TestChartManagerFlagsExist(t *testing.T) {
	known := managerFlags(t)
	sources := map[string][]object{
		"helm default":      render(t),
		"helm full-values":  render(t, append([]string{"-f", filepath.Join(chartDir(t), "ci", "full-values.yaml")}, monitoringAPIs...)...),
		"helm no-metrics":   render(t, "-f", filepath.Join(chartDir(t), "ci", "no-metrics-values.yaml")),
		"kustomize default": kustomizeBuild(t),
	}
	// The example in values.yaml's comment on extraArgs is a flag users copy.
	values, err := os.ReadFile(filepath.Join(chartDir(t), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	examples := regexp.MustCompile(`(?m)^# -- Extra command-line flags for the manager, e\.g\. \["--([a-z0-9-]+)`).FindSubmatch(values)
	if examples == nil {
		t.Errorf("values.yaml has no example flag in its comment on extraArgs")
	} else if !known[string(examples[1])] {
		t.Errorf("values.yaml suggests extraArgs --%s, which the manager does not have; known flags: %v", examples[1], sortedKeys(known))
	}
	for name, objs := range sources {
		var d appsv1.Deployment
		find(t, objs, "Deployment", "").into(t, &d)
		c := container(t, &d, "manager")
		for _, f := range argFlags(c.Args) {
			if !known[f] {
				t.Errorf("%s: the manager has no flag --%s (cmd/manager/main.go); known flags: %v", name, f, sortedKeys(known))
			}
		}
	}
}

func TestChartOperatorPodIsRestricted(t *testing.T) {
	for name, objs := range map[string][]object{"helm": render(t), "kustomize": kustomizeBuild(t)} {
		var d appsv1.Deployment
		find(t, objs, "Deployment", "").into(t, &d)
		checkRestricted(t, name, &d.Spec.Template.Spec)
		c := container(t, &d, "manager")
		if c.LivenessProbe == nil || c.ReadinessProbe == nil {
			t.Errorf("%s: manager needs liveness and readiness probes", name)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: manager needs CPU requests and a memory limit, got %+v", name, c.Resources)
		}
		if !slices.Contains(c.Args, "--leader-elect") {
			t.Errorf("%s: leader election is off by default: args %v", name, c.Args)
		}
		if !slices.Contains(c.Args, "--metrics-secure=true") {
			t.Errorf("%s: metrics are not secure by default: args %v", name, c.Args)
		}
	}
}

// checkRestricted applies the checks of the Pod Security "restricted" profile that a manifest can fail.
func checkRestricted(t *testing.T, name string, spec *corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("%s: pod securityContext.runAsNonRoot must be true", name)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccompProfile must be RuntimeDefault", name)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("%s: host namespaces are not allowed", name)
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("%s: hostPath volume %s is not allowed", name, v.Name)
		}
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s/%s: no securityContext", name, c.Name)
			continue
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("%s/%s: allowPrivilegeEscalation must be false", name, c.Name)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("%s/%s: readOnlyRootFilesystem must be true", name, c.Name)
		case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
			t.Errorf("%s/%s: capabilities must drop ALL and add none", name, c.Name)
		case sc.Privileged != nil && *sc.Privileged:
			t.Errorf("%s/%s: privileged", name, c.Name)
		}
		if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
			t.Errorf("%s/%s: image %q needs a version tag", name, c.Name, c.Image)
		}
	}
}

func container(t *testing.T, d *appsv1.Deployment, name string) *corev1.Container {
	t.Helper()
	for i := range d.Spec.Template.Spec.Containers {
		if d.Spec.Template.Spec.Containers[i].Name == name {
			return &d.Spec.Template.Spec.Containers[i]
		}
	}
	t.Fatalf("Deployment %s has no container %q", d.Name, name)
	return nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
