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

// Package e2e is the end-to-end suite: the chart installed as a user would into the local single-node
// cluster (hack/cluster-up.sh), Session Manager emulated by ssm-emulator running as a pod with a web server
// on its loopback, and PortForwards exercised through their Service from client pods.
//
// Run it with `make test-e2e`.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

// Names of what the suite installs. The release and its namespace are what `make demo` uses too, so the
// suite replaces a demo install instead of running a second operator beside it.
const (
	release     = "ssmtunnel"
	nsOperator  = "ssmtunnel-system"
	nsAWS       = "ssmtunnel-e2e-aws" // the emulated Session Manager and instance
	nsApps      = "ssmtunnel-e2e"     // PortForwards, tunnel pods and client pods: Pod Security restricted
	instanceID  = "i-0e2e0000000000001"
	emulator    = "ssm-emulator"
	emulatorURL = "http://" + emulator + "." + nsAWS + ".svc:4566"
	pfName      = "web"
	// tunnelHealthPort serves the tunnel pods' /healthz and /readyz.
	tunnelHealthPort = 8081
	// Ports of the web application on the emulated instance's loopback.
	webPort, altPort = 8080, 8081
	// credentialsSecret is the operator's default name of the Secret that tunnel pods load (fake keys: the
	// emulator checks that requests are signed, not by whom).
	credentialsSecret = "ssmtunnel-aws-credentials"
	// operatorSA is the chart's operator ServiceAccount for release "ssmtunnel" (its full name).
	operatorSA = "ssmtunnel"
)

// restricted labels a namespace so the API server enforces Pod Security "restricted" in it.
var restricted = map[string]string{
	"pod-security.kubernetes.io/enforce":         "restricted",
	"pod-security.kubernetes.io/enforce-version": "latest",
}

// timings collects the figures the suite prints at the end.
type timings struct{ lines []string }

func (tm *timings) add(t testing.TB, name string, d time.Duration) {
	line := fmt.Sprintf("%-44s %8.2fs", name, d.Seconds())
	tm.lines = append(tm.lines, line)
	t.Logf("TIMING %s", line)
}

// suite is the state shared by the ordered steps of TestE2E.
type suite struct {
	e   env
	k   clients
	tm  timings
	pf  *v1alpha1.PortForward
	dir string
	// failures are the steps' failure messages, repeated after the diagnostics.
	failures []string
}

// failureRecorder is a step's testing.TB that also records what it fails with.
type failureRecorder struct {
	*testing.T
	failures *[]string
}

func (r *failureRecorder) record(msg string) {
	*r.failures = append(*r.failures, r.Name()+": "+msg)
}

func (r *failureRecorder) Errorf(format string, args ...any) {
	r.T.Helper()
	r.record(fmt.Sprintf(format, args...))
	r.T.Errorf(format, args...)
}

func (r *failureRecorder) Error(args ...any) {
	r.T.Helper()
	r.record(fmt.Sprint(args...))
	r.T.Error(args...)
}

func (r *failureRecorder) Fatalf(format string, args ...any) {
	r.T.Helper()
	r.record(fmt.Sprintf(format, args...))
	r.T.Fatalf(format, args...)
}

func (r *failureRecorder) Fatal(args ...any) {
	r.T.Helper()
	r.record(fmt.Sprint(args...))
	r.T.Fatal(args...)
}

func TestE2E(t *testing.T) {
	e := loadEnv(t)
	s := &suite{e: e, k: newClients(t, e.kubeconfig), dir: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), 18*time.Minute)
	defer cancel()

	t.Cleanup(func() {
		if t.Failed() {
			dumpDiagnostics(t, s.k, nsOperator, nsAWS, nsApps, nsDenied, nsTeamB)
			t.Logf("the failed run's objects are left in place; `make test-e2e` starts by removing them")
			// The diagnostics are long and a CI log is often read from its tail: the cause comes last too.
			for _, f := range s.failures {
				t.Logf("FAILURE %s", f)
			}
			return
		}
		if os.Getenv("E2E_KEEP") == "" {
			s.teardown(t)
		}
	})

	steps := []struct {
		name string
		fn   func(context.Context, testing.TB)
	}{
		{"Setup", s.setup},
		{"PortForwardBecomesReady", s.portForwardBecomesReady},
		{"HundredConcurrentByteExactRequests", s.hundredConcurrentRequests},
		{"IdleClosesKeepTunnelReadyWithoutRestarts", s.idleTimeout},
		{"TunnelPodDeletionKeepsServiceAnswering", s.podDeletion},
		{"SpecChangeRollsPodsAndNewPortAnswers", s.specChange},
		{"ScaleSubresource", s.scale},
		{"AllowedClientsNetworkPolicy", s.allowedClients},
		{"BrokenPortForwardsSayWhy", s.brokenPortForwards},
		{"PolicyFencesNamespaces", s.policyFences},
		{"OperatorHasOnlyChartRBAC", s.operatorRBAC},
		{"WatchNamespacesRBACIsNamespaced", s.watchNamespacesRBAC},
		{"DeletingPortForwardRemovesChildren", s.deletion},
	}
	for _, st := range steps {
		if !t.Run(st.name, func(t *testing.T) { st.fn(ctx, &failureRecorder{T: t, failures: &s.failures}) }) {
			t.Fatalf("step %s failed; later steps depend on it", st.name)
		}
	}

	summary := "E2E timings:\n  " + strings.Join(s.tm.lines, "\n  ")
	t.Log(summary)
	fmt.Println(summary)
	if out := os.Getenv("E2E_TIMINGS_FILE"); out != "" {
		_ = os.WriteFile(out, []byte(summary+"\n"), 0o644)
	}
}

// setup imports the images, starts the emulator pod, installs the chart with Helm and prepares the
// restricted application namespace.
func (s *suite) setup(ctx context.Context, t testing.TB) {
	k := s.k
	start := time.Now()
	waitFor(ctx, t, 2*time.Minute, "a Ready node", func(ctx context.Context) (bool, string, error) {
		var nodes corev1.NodeList
		if err := k.c.List(ctx, &nodes); err != nil {
			return false, "", err
		}
		for _, n := range nodes.Items {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					return true, "", nil
				}
			}
		}
		return false, fmt.Sprintf("%d nodes, none Ready", len(nodes.Items)), nil
	})

	// Leftovers of an earlier run (or of `make demo`): one operator per cluster.
	s.removeOtherReleases(ctx, t)
	deleteNamespace(ctx, t, k, nsApps)
	deleteNamespace(ctx, t, k, nsDenied)
	deleteNamespace(ctx, t, k, nsTeamB)
	deleteNamespace(ctx, t, k, nsAWS)

	// Images: the product's is in the registry (`make push`); the test web application's is built and
	// pushed here. The cluster pulls both.
	s.buildWebImage(ctx, t)
	s.tm.add(t, "web image built and pushed", time.Since(start))

	ensureNamespace(ctx, t, k, nsAWS, restricted)
	ensureNamespace(ctx, t, k, nsApps, mergeLabels(restricted, map[string]string{"ssmtunnel.io/e2e": "apps"}))
	s.startEmulator(ctx, t)

	// The credentials Secret the operator's tunnel pods load in their namespace (fake keys).
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: credentialsSecret, Namespace: nsApps},
		StringData: map[string]string{
			"AWS_ACCESS_KEY_ID":     "AKIAE2EFAKEKEY000000",
			"AWS_SECRET_ACCESS_KEY": "e2e-fake-secret-access-key-not-a-real-one",
		},
	}
	if err := k.c.Create(ctx, secret); err != nil {
		t.Fatalf("create credentials Secret: %v", err)
	}

	installStart := time.Now()
	s.installChart(ctx, t)
	s.tm.add(t, "helm install --wait (operator Ready)", time.Since(installStart))
	s.grantE2ENamespaces(ctx, t)
}

// removeOtherReleases uninstalls any release of this chart (ours from an earlier run, or the demo's), so
// exactly one operator reconciles PortForwards.
func (s *suite) removeOtherReleases(ctx context.Context, t testing.TB) {
	out, err := run(ctx, s.e.helm, "--kubeconfig", s.e.kubeconfig, "list", "--all-namespaces",
		"--deployed", "--failed", "--pending", "--superseded", "--uninstalling", "--output", "json") // every state
	if err != nil {
		t.Fatalf("helm list: %v", err)
	}
	var releases []struct {
		Name, Namespace, Chart string
	}
	if err := json.Unmarshal([]byte(out), &releases); err != nil {
		t.Fatalf("helm list output %q: %v", out, err)
	}
	for _, r := range releases {
		if !strings.HasPrefix(r.Chart, "ssmtunnel-") {
			continue
		}
		t.Logf("uninstalling earlier release %s/%s (%s)", r.Namespace, r.Name, r.Chart)
		if out, err := run(ctx, s.e.helm, "--kubeconfig", s.e.kubeconfig, "uninstall", r.Name, "--namespace", r.Namespace, "--wait", "--timeout", "2m"); err != nil {
			t.Fatalf("helm uninstall %s: %v\n%s", r.Name, err, out)
		}
	}
}

// buildWebImage builds test/e2e/webapp into its own small image and pushes it to the registry.
func (s *suite) buildWebImage(ctx context.Context, t testing.TB) {
	bin := filepath.Join(s.dir, "webapp")
	c := execIn(ctx, s.e.root, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64"}, "go", "build", "-trimpath", "-o", bin, "./test/e2e/webapp")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("build the web application: %v\n%s", err, out)
	}
	buildAndPush(ctx, t, s.e, s.e.webImage(), "--user", "65532", "--file", "/webapp="+bin, "--entrypoint", "/webapp")
}

// startEmulator runs ssm-emulator (the product image) with one emulated instance, and the web application
// on the same pod's loopback, where the emulated agent forwards to.
func (s *suite) startEmulator(ctx context.Context, t testing.TB) {
	k := s.k
	labels := map[string]string{"app.kubernetes.io/name": emulator}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: emulator, Namespace: nsAWS, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: ptr.To(false),
					EnableServiceLinks:           ptr.To(false),
					SecurityContext:              restrictedPodSecurity(),
					Containers: []corev1.Container{
						{
							Name:            "emulator",
							Image:           s.e.img,
							ImagePullPolicy: corev1.PullIfNotPresent,
							Command:         emulatorCommand(),
							Ports:           []corev1.ContainerPort{{Name: "ssm", ContainerPort: 4566}},
							ReadinessProbe: &corev1.Probe{
								ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("ssm")}},
								PeriodSeconds: 1,
							},
							SecurityContext: restrictedContainerSecurity(),
						},
						{
							Name:            "web",
							Image:           s.e.webImage(),
							ImagePullPolicy: corev1.PullIfNotPresent,
							Command: []string{"/webapp", "serve",
								"--listen", fmt.Sprintf("127.0.0.1:%d", webPort),
								"--listen", fmt.Sprintf("127.0.0.1:%d", altPort)},
							SecurityContext: restrictedContainerSecurity(),
						},
					},
				},
			},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: emulator, Namespace: nsAWS, Labels: labels},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "ssm", Port: 4566, TargetPort: intstr.FromString("ssm")}},
		},
	}
	for _, o := range []client.Object{dep, svc} {
		if err := k.c.Create(ctx, o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
	d := waitFor(ctx, t, 3*time.Minute, "the emulator pod to be ready", func(ctx context.Context) (bool, string, error) {
		var got appsv1.Deployment
		if err := k.c.Get(ctx, client.ObjectKeyFromObject(dep), &got); err != nil {
			return false, "", err
		}
		state, _ := s.podStates(ctx, nsAWS, labels)
		return got.Status.ReadyReplicas == 1, state, nil
	})
	s.tm.add(t, "emulator pod ready", d)
}

// emulatorCommand is ssm-emulator serving the Service's port for the whole cluster, with one instance whose
// agent may dial the pod's loopback (the web application), and one that is not connected.
func emulatorCommand() []string {
	return []string{"/ssm-emulator", "--listen", "0.0.0.0:4566", "--instance", instanceID,
		"--instance", offlineInstanceID + ",ping=ConnectionLost"}
}

// installChart installs the chart from the registry with Helm as a user would, pointed at the emulator,
// and checks that the operator runs the pushed image, pulled from the registry by digest.
func (s *suite) installChart(ctx context.Context, t testing.TB) {
	// Helm installs CRDs only when they are missing; an earlier run's CRD is brought up to date the way the
	// chart's README tells users to on upgrades.
	var crd apiextensionsv1.CustomResourceDefinition
	err := s.k.c.Get(ctx, client.ObjectKey{Name: "portforwards.ssmtunnel.io"}, &crd)
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("look for an earlier run's CRD: %v", err)
	}
	if err == nil {
		if out, err := run(ctx, s.e.kubectl(), "--kubeconfig", s.e.kubeconfig, "apply", "--server-side", "--force-conflicts",
			"-f", filepath.Join(s.e.root, "charts", "ssmtunnel", "crds")); err != nil {
			t.Fatalf("update CRDs: %v\n%s", err, out)
		}
	}
	ensureNamespace(ctx, t, s.k, nsOperator, restricted)
	// As the README tells users: the chart from the registry, whose image values `make chart-push` set to
	// the pushed image and its digest.
	args := []string{"--kubeconfig", s.e.kubeconfig, "install", release, s.e.chartRef(), "--version", s.e.chartVersion, "--plain-http",
		"--namespace", nsOperator,
		"--set", "aws.region=us-east-1",
		"--set", "aws.endpointURL=" + emulatorURL,
		"--set", "logLevel=debug",
		"--wait", "--timeout", "3m",
	}
	out, err := run(ctx, s.e.helm, args...)
	if err != nil {
		t.Fatalf("helm install: %v", err)
	}
	t.Logf("helm install %s --version %s:\n%s", s.e.chartRef(), s.e.chartVersion, out)

	var pods corev1.PodList
	if err := s.k.c.List(ctx, &pods, client.InNamespace(nsOperator), client.MatchingLabels{"app.kubernetes.io/instance": release}); err != nil {
		t.Fatal(err)
	}
	repo, _ := s.e.repoImage()
	want := repo + "@" + s.e.imgDigest
	for _, p := range pods.Items {
		for _, c := range p.Status.ContainerStatuses {
			t.Logf("operator pod %s runs %s (imageID %s)", p.Name, c.Image, c.ImageID)
			if c.ImageID != want {
				t.Errorf("operator pod %s container %s has imageID %q, want the pushed index %q", p.Name, c.Name, c.ImageID, want)
			}
		}
	}
	if len(pods.Items) == 0 {
		t.Errorf("no operator pod of release %s in %s", release, nsOperator)
	}
}

// teardown uninstalls the release and removes the namespaces of a successful run.
func (s *suite) teardown(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	deleteNamespace(ctx, t, s.k, nsApps)
	deleteNamespace(ctx, t, s.k, nsDenied)
	deleteNamespace(ctx, t, s.k, nsTeamB)
	deleteNamespace(ctx, t, s.k, nsAWS)
	if err := s.k.c.Delete(ctx, &v1alpha1.PortForwardPolicy{ObjectMeta: metav1.ObjectMeta{Name: e2ePolicy}}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete PortForwardPolicy %s: %v", e2ePolicy, err)
	}
	if out, err := run(ctx, s.e.helm, "--kubeconfig", s.e.kubeconfig, "uninstall", release, "--namespace", nsOperator, "--wait"); err != nil {
		t.Errorf("helm uninstall: %v\n%s", err, out)
	}
	deleteNamespace(ctx, t, s.k, nsOperator)
}

// podStates summarises the pods matching labels in ns, and returns how many are ready and not terminating.
func (s *suite) podStates(ctx context.Context, ns string, labels map[string]string) (string, int) {
	var pods corev1.PodList
	if err := s.k.c.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
		return err.Error(), 0
	}
	var lines []string
	ready := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		lines = append(lines, podSummary(p))
		if p.DeletionTimestamp == nil && isPodReady(p) {
			ready++
		}
	}
	return strings.Join(lines, "; "), ready
}

func isPodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// tunnelLabels select the tunnel pods of PortForward name (the contract of the operator's labels).
func tunnelLabels(name string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":       "ssmtunnel",
		"app.kubernetes.io/instance":   name,
		"app.kubernetes.io/component":  "tunnel",
		"app.kubernetes.io/managed-by": "ssmtunnel-operator",
	}
}

// waitPortForwardReady waits until the PortForward's status is Ready for its current generation with want
// ready replicas, and the Service's EndpointSlices list exactly those pods as ready, and returns how long
// that took. The PortForward's status follows the pods; traffic to the Service's ClusterIP follows the
// EndpointSlices, which the endpoint controller updates a moment later.
func (s *suite) waitPortForwardReady(ctx context.Context, t testing.TB, want int32, timeout time.Duration) time.Duration {
	return waitFor(ctx, t, timeout, fmt.Sprintf("PortForward %s/%s Ready with %d ready replicas", nsApps, pfName, want),
		func(ctx context.Context) (bool, string, error) {
			var pf v1alpha1.PortForward
			if err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &pf); err != nil {
				return false, "", err
			}
			s.pf = &pf
			ready := false
			for _, c := range pf.Status.Conditions {
				if c.Type == v1alpha1.ConditionReady && c.Status == metav1.ConditionTrue && c.ObservedGeneration == pf.Generation {
					ready = true
				}
			}
			pods, nready := s.podStates(ctx, nsApps, tunnelLabels(pfName))
			endpoints, err := s.readyEndpoints(ctx, pfName)
			if err != nil {
				return false, "", err
			}
			state := fmt.Sprintf("generation=%d observed=%d ready=%q readyReplicas=%d conditions=%v pods: %s; ready endpoints %d",
				pf.Generation, pf.Status.ObservedGeneration, pf.Status.Ready, pf.Status.ReadyReplicas, conditionSummary(pf.Status.Conditions), pods, endpoints)
			if !(ready && pf.Status.ObservedGeneration == pf.Generation && pf.Status.ReadyReplicas == want && int32(nready) == want &&
				int32(endpoints) == want) {
				return false, state, nil
			}
			if want > 0 {
				if err := s.serviceAnswers(ctx); err != nil {
					return false, state + "; " + err.Error(), nil
				}
			}
			return true, state, nil
		})
}

// serviceAnswers connects to the Service's ClusterIP from this process, on the node: kube-proxy programs
// the node's rules a moment after the EndpointSlices change (at most one sync a second), and until then
// the ClusterIP refuses connections. The connection is closed at once.
func (s *suite) serviceAnswers(ctx context.Context) error {
	var svc corev1.Service
	if err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &svc); err != nil {
		return err
	}
	if len(svc.Spec.Ports) == 0 || svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return fmt.Errorf("Service %s has no ClusterIP port", pfName)
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(svc.Spec.Ports[0].Port))))
	if err != nil {
		return fmt.Errorf("the ClusterIP does not answer yet: %w", err)
	}
	return c.Close()
}

// readyEndpoints counts the ready endpoints of the Service's EndpointSlices: the backends its ClusterIP
// sends new connections to.
func (s *suite) readyEndpoints(ctx context.Context, service string) (int, error) {
	var list discoveryv1.EndpointSliceList
	if err := s.k.c.List(ctx, &list, client.InNamespace(nsApps), client.MatchingLabels{discoveryv1.LabelServiceName: service}); err != nil {
		return 0, err
	}
	n := 0
	for _, sl := range list.Items {
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
				n++
			}
		}
	}
	return n, nil
}

func conditionSummary(cs []metav1.Condition) string {
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%s=%s/%s(%s)", c.Type, c.Status, c.Reason, c.Message))
	}
	return strings.Join(out, ",")
}

// portForwardBecomesReady applies the PortForward and measures the time to Ready.
func (s *suite) portForwardBecomesReady(ctx context.Context, t testing.TB) {
	pf := &v1alpha1.PortForward{
		ObjectMeta: metav1.ObjectMeta{Name: pfName, Namespace: nsApps},
		Spec: v1alpha1.PortForwardSpec{
			Target:   v1alpha1.Target{InstanceID: instanceID},
			Ports:    []v1alpha1.PortSpec{{Name: "http", Port: 80, RemotePort: webPort}},
			Replicas: ptr.To[int32](2),
		},
	}
	start := time.Now()
	if err := s.k.c.Create(ctx, pf); err != nil {
		t.Fatalf("create PortForward: %v", err)
	}
	s.waitPortForwardReady(ctx, t, 2, 4*time.Minute)
	s.tm.add(t, "PortForward apply -> Ready (2 replicas)", time.Since(start))

	// The children the contract promises: a Service named like the PortForward, a Deployment, and a PDB
	// since replicas > 1, all labelled and owned by the PortForward.
	var svc corev1.Service
	if err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &svc); err != nil {
		t.Fatalf("the Service named like the PortForward: %v", err)
	}
	if svc.Spec.Type != corev1.ServiceTypeClusterIP || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 80 {
		t.Errorf("Service %s: type %s ports %+v, want ClusterIP with port 80", svc.Name, svc.Spec.Type, svc.Spec.Ports)
	}
	var pdb policyv1.PodDisruptionBudget
	if err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &pdb); err != nil {
		t.Errorf("PodDisruptionBudget for 2 replicas: %v", err)
	}
	for _, o := range []client.Object{&svc, &pdb} {
		if !ownedBy(o, s.pf) {
			t.Errorf("%T %s is not controlled by the PortForward: %+v", o, o.GetName(), o.GetOwnerReferences())
		}
		for k, v := range tunnelLabels(pfName) {
			if o.GetLabels()[k] != v {
				t.Errorf("%T %s: label %s=%q, want %q", o, o.GetName(), k, o.GetLabels()[k], v)
			}
		}
	}
	if want := fmt.Sprintf("%s.%s.svc:80", pfName, nsApps); !slices.Contains(s.pf.Status.Addresses, want) {
		t.Errorf("status.addresses %v lacks %s", s.pf.Status.Addresses, want)
	}

	// The tunnel pods were admitted under Pod Security "restricted".
	var ns corev1.Namespace
	if err := s.k.c.Get(ctx, client.ObjectKey{Name: nsApps}, &ns); err != nil {
		t.Fatal(err)
	}
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Fatalf("namespace %s is not enforcing restricted: %v", nsApps, ns.Labels)
	}
	out, err := run(ctx, s.e.kubectl(), "--kubeconfig", s.e.kubeconfig, "get", "portforwards", "-n", nsApps, "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl get pf -o wide:\n%s", out)
}

func ownedBy(o client.Object, pf *v1alpha1.PortForward) bool {
	for _, r := range o.GetOwnerReferences() {
		if r.UID == pf.UID && r.Controller != nil && *r.Controller {
			return true
		}
	}
	return false
}

// serviceURL is the in-cluster URL of the PortForward's port.
func serviceURL(port int) string { return fmt.Sprintf("http://%s.%s.svc:%d", pfName, nsApps, port) }

// loadResult mirrors webapp's LoadResult.
type loadResult struct {
	Requests, OK, Failed int
	Bytes                int64
	DurationMS           int64 `json:"durationMs"`
	Errors               []string
}

// probeResult mirrors webapp's ProbeResult.
type probeResult struct {
	Total, OK, Failed int
	MaxGapMS          int64 `json:"maxGapMs"`
	Errors            []string
}

// lastJSON decodes the last line of a client pod's output.
func lastJSON(t testing.TB, out string, v any) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), v); err != nil {
		t.Fatalf("client output is not a JSON summary (%v):\n%s", err, out)
	}
}

var clientLabels = map[string]string{"app": "web-client"}

func (s *suite) hundredConcurrentRequests(ctx context.Context, t testing.TB) {
	out, ok := runClientPod(ctx, t, s.k, s.e.webImage(), nsApps, "load-100", clientLabels, 5*time.Minute,
		"load", "--url", serviceURL(80), "--requests", "100", "--concurrency", "100", "--size", "32768")
	var res loadResult
	lastJSON(t, out, &res)
	t.Logf("100 concurrent requests of 32 KiB: %+v", res)
	if !ok || res.OK != 100 || res.Failed != 0 {
		t.Fatalf("want 100 byte-exact responses, got ok=%d failed=%d errors=%v", res.OK, res.Failed, res.Errors)
	}
	s.tm.add(t, "100 concurrent 32 KiB requests (client pod)", time.Duration(res.DurationMS)*time.Millisecond)
}

// podDeletion deletes one of two tunnel pods while a client keeps requesting through the Service.
func (s *suite) podDeletion(ctx context.Context, t testing.TB) {
	var pods corev1.PodList
	if err := s.k.c.List(ctx, &pods, client.InNamespace(nsApps), client.MatchingLabels(tunnelLabels(pfName))); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 2 {
		t.Fatalf("want 2 tunnel pods, got %d", len(pods.Items))
	}
	victim := pods.Items[0]
	survivor := pods.Items[1]

	// A probe pod requests continuously (a new connection each time) for the whole scenario.
	const probeFor = 45 * time.Second
	waitProbe := startClientPod(ctx, t, s.k, s.e.webImage(), nsApps, "probe", clientLabels,
		"probe", "--url", serviceURL(80), "--duration", probeFor.String(), "--workers", "4", "--interval", "50ms")
	waitFor(ctx, t, 2*time.Minute, "the probe pod to start probing", func(ctx context.Context) (bool, string, error) {
		var p corev1.Pod
		if err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: "probe"}, &p); err != nil {
			return false, "", err
		}
		if p.Status.Phase != corev1.PodRunning {
			return false, podSummary(&p), nil
		}
		logs := podLogs(ctx, s.k, nsApps, "probe", "client", false)
		return strings.Contains(logs, "probing"), podSummary(&p), nil
	})
	probeStart := time.Now()

	deleted := time.Now()
	if err := s.k.c.Delete(ctx, &victim); err != nil {
		t.Fatalf("delete tunnel pod %s: %v", victim.Name, err)
	}
	t.Logf("deleted tunnel pod %s (survivor %s)", victim.Name, survivor.Name)
	d := waitFor(ctx, t, 3*time.Minute, "the Deployment to heal to 2 ready tunnel pods", func(ctx context.Context) (bool, string, error) {
		var list corev1.PodList
		if err := s.k.c.List(ctx, &list, client.InNamespace(nsApps), client.MatchingLabels(tunnelLabels(pfName))); err != nil {
			return false, "", err
		}
		ready, replaced := 0, false
		var states []string
		for i := range list.Items {
			p := &list.Items[i]
			states = append(states, podSummary(p))
			if p.DeletionTimestamp == nil && isPodReady(p) {
				ready++
				if p.UID != victim.UID && p.UID != survivor.UID {
					replaced = true
				}
			}
		}
		return ready == 2 && replaced, strings.Join(states, "; "), nil
	})
	s.tm.add(t, "tunnel pod deletion -> replacement Ready", d)
	s.waitPortForwardReady(ctx, t, 2, time.Minute)

	out, ok := waitProbe(probeFor + 3*time.Minute - time.Since(probeStart))
	var res probeResult
	lastJSON(t, out, &res)
	t.Logf("probe through the Service during the deletion: %+v", res)
	if !ok || res.OK == 0 {
		t.Fatalf("the Service stopped answering: %+v", res)
	}
	// "Keeps answering": the longest stretch without a successful response stays short. Connections that
	// kube-proxy still sends to the terminating pod in the moment before its endpoint is withdrawn may fail;
	// they are reported, and must stay a small fraction.
	if res.MaxGapMS > 3000 {
		t.Errorf("the Service did not answer for %d ms during the pod deletion", res.MaxGapMS)
	}
	if res.Failed*20 > res.Total {
		t.Errorf("%d of %d probe requests failed during the pod deletion (more than 5%%): %v", res.Failed, res.Total, res.Errors)
	}
	s.tm.add(t, "longest gap without an answer during deletion", time.Duration(res.MaxGapMS)*time.Millisecond)
	t.Logf("probe: %d requests, %d failed, deletion at +%s", res.Total, res.Failed, deleted.Sub(probeStart).Round(time.Millisecond))
}

// specChange adds a port: the pods roll, and both the old and the new port answer.
func (s *suite) specChange(ctx context.Context, t testing.TB) {
	before := s.tunnelPodUIDs(ctx, t)
	var pf v1alpha1.PortForward
	if err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &pf); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(pf.DeepCopy())
	pf.Spec.Ports = append(pf.Spec.Ports, v1alpha1.PortSpec{Name: "alt", Port: 81, RemotePort: altPort})
	start := time.Now()
	if err := s.k.c.Patch(ctx, &pf, patch); err != nil {
		t.Fatalf("add port 81: %v", err)
	}
	waitFor(ctx, t, 4*time.Minute, "the tunnel pods to be replaced by pods of the new spec", func(ctx context.Context) (bool, string, error) {
		var dep appsv1.Deployment
		if err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &dep); err != nil {
			return false, "", err
		}
		var list corev1.PodList
		if err := s.k.c.List(ctx, &list, client.InNamespace(nsApps), client.MatchingLabels(tunnelLabels(pfName))); err != nil {
			return false, "", err
		}
		fresh, stale := 0, 0
		var states []string
		for i := range list.Items {
			p := &list.Items[i]
			states = append(states, podSummary(p))
			if before[p.UID] {
				stale++
			} else if p.DeletionTimestamp == nil && isPodReady(p) {
				fresh++
			}
		}
		st := dep.Status
		state := fmt.Sprintf("deployment gen=%d observed=%d updated=%d ready=%d; pods: %s",
			dep.Generation, st.ObservedGeneration, st.UpdatedReplicas, st.ReadyReplicas, strings.Join(states, "; "))
		return st.ObservedGeneration == dep.Generation && st.UpdatedReplicas == 2 && fresh == 2 && stale == 0, state, nil
	})
	s.waitPortForwardReady(ctx, t, 2, 2*time.Minute)
	s.tm.add(t, "spec change (new port) -> rolled and Ready", time.Since(start))

	for port, want := range map[int]string{80: fmt.Sprint(webPort), 81: fmt.Sprint(altPort)} {
		out, ok := runClientPod(ctx, t, s.k, s.e.webImage(), nsApps, fmt.Sprintf("get-%d", port), clientLabels, 3*time.Minute,
			"get", "--url", serviceURL(port)+"/port")
		if !ok || strings.TrimSpace(out) != want {
			t.Errorf("%s/port answered %q (ok=%t), want %q", serviceURL(port), strings.TrimSpace(out), ok, want)
		}
	}
	var svc corev1.Service
	if err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &svc); err != nil {
		t.Fatal(err)
	}
	var ports []int32
	for _, p := range svc.Spec.Ports {
		ports = append(ports, p.Port)
	}
	slices.Sort(ports)
	if !slices.Equal(ports, []int32{80, 81}) {
		t.Errorf("Service ports %v, want [80 81]", ports)
	}
}

func (s *suite) tunnelPodUIDs(ctx context.Context, t testing.TB) map[any]bool {
	var list corev1.PodList
	if err := s.k.c.List(ctx, &list, client.InNamespace(nsApps), client.MatchingLabels(tunnelLabels(pfName))); err != nil {
		t.Fatal(err)
	}
	out := map[any]bool{}
	for _, p := range list.Items {
		out[p.UID] = true
	}
	return out
}

// scale changes replicas through the scale subresource, as kubectl scale and autoscalers do.
func (s *suite) scale(ctx context.Context, t testing.TB) {
	for _, want := range []int32{3, 2} {
		pf := &v1alpha1.PortForward{ObjectMeta: metav1.ObjectMeta{Namespace: nsApps, Name: pfName}}
		sc := &autoscalingv1.Scale{}
		if err := s.k.c.SubResource("scale").Get(ctx, pf, sc); err != nil {
			t.Fatalf("get scale: %v", err)
		}
		if sc.Status.Selector == "" {
			t.Errorf("scale status.selector is empty: autoscalers cannot find the pods")
		}
		sc.Spec.Replicas = want
		start := time.Now()
		if err := s.k.c.SubResource("scale").Update(ctx, pf, client.WithSubResourceBody(sc)); err != nil {
			t.Fatalf("update scale to %d: %v", want, err)
		}
		s.waitPortForwardReady(ctx, t, want, 3*time.Minute)
		s.tm.add(t, fmt.Sprintf("scale subresource -> %d ready", want), time.Since(start))
		var dep appsv1.Deployment
		if err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &dep); err != nil {
			t.Fatal(err)
		}
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas != want {
			t.Errorf("Deployment replicas %v, want %d", dep.Spec.Replicas, want)
		}
		if err := s.k.c.SubResource("scale").Get(ctx, pf, sc); err != nil {
			t.Fatal(err)
		}
		if sc.Spec.Replicas != want || sc.Status.Replicas != want {
			t.Errorf("scale after scaling: spec %d status %d, want %d", sc.Spec.Replicas, sc.Status.Replicas, want)
		}
	}
}

// allowedClients restricts the clients: the NetworkPolicy's peers equal spec.allowedClients and its ports
// are the tunnel container's ports of the forwarded ports. (The bridge CNI here does not enforce policies:
// the object is tested, not enforcement.)
func (s *suite) allowedClients(ctx context.Context, t testing.TB) {
	peers := []v1alpha1.ClientPeer{
		{PodSelector: &metav1.LabelSelector{MatchLabels: clientLabels}},
		{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": nsAWS}},
			PodSelector:       &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "role", Operator: metav1.LabelSelectorOpIn, Values: []string{"db-client", "probe"}}}},
		},
	}
	var pf v1alpha1.PortForward
	if err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &pf); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(pf.DeepCopy())
	pf.Spec.AllowedClients = peers
	if err := s.k.c.Patch(ctx, &pf, patch); err != nil {
		t.Fatalf("set allowedClients: %v", err)
	}
	var np networkingv1.NetworkPolicy
	// The PortForward had a NetworkPolicy already (the chart's defaultClients: namespace); wait for the
	// one that carries the new peers.
	d := waitFor(ctx, t, time.Minute, "the NetworkPolicy of spec.allowedClients", func(ctx context.Context) (bool, string, error) {
		err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &np)
		if err != nil {
			return false, "", client.IgnoreNotFound(err)
		}
		return len(np.Spec.Ingress) > 0 && len(np.Spec.Ingress[0].From) == len(peers), fmt.Sprintf("ingress %+v", np.Spec.Ingress), nil
	})
	s.tm.add(t, "allowedClients -> NetworkPolicy", d)

	var dep appsv1.Deployment
	if err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &dep); err != nil {
		t.Fatal(err)
	}
	// Container ports of the forwarded ports, by the names of spec.ports.
	forwarded := map[int32]bool{}
	for _, c := range dep.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "http" || p.Name == "alt" {
				forwarded[p.ContainerPort] = true
			}
		}
	}
	if len(forwarded) != 2 {
		t.Fatalf("tunnel container lacks the forwarded ports http and alt: %+v", dep.Spec.Template.Spec.Containers)
	}
	if diff := cmp.Diff(&metav1.LabelSelector{MatchLabels: dep.Spec.Selector.MatchLabels}, &np.Spec.PodSelector); diff != "" {
		t.Errorf("NetworkPolicy podSelector is not the tunnel pods' selector (-want +got):\n%s", diff)
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Errorf("NetworkPolicy policyTypes %v lacks Ingress", np.Spec.PolicyTypes)
	}
	wantPeers := make([]networkingv1.NetworkPolicyPeer, 0, len(peers))
	for _, p := range peers {
		wantPeers = append(wantPeers, networkingv1.NetworkPolicyPeer{NamespaceSelector: p.NamespaceSelector, PodSelector: p.PodSelector})
	}
	// The rule that carries the peers must admit exactly the forwarded ports; no rule may admit a forwarded
	// port from everywhere.
	found, operatorAdmitted := false, false
	for _, rule := range np.Spec.Ingress {
		ports := map[int32]bool{}
		for _, p := range rule.Ports {
			if p.Port == nil || p.Port.Type != intstr.Int {
				t.Errorf("NetworkPolicy port %+v is not numeric", p)
				continue
			}
			if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
				t.Errorf("NetworkPolicy port %+v is not TCP", p)
			}
			ports[p.Port.IntVal] = true
		}
		if len(rule.From) == 0 {
			for port := range ports {
				if forwarded[port] {
					t.Errorf("NetworkPolicy admits forwarded port %d from every source: %+v", port, rule)
				}
			}
			continue
		}
		if len(ports) == 1 && ports[tunnelHealthPort] {
			// The operator reads the pods' /readyz: from its own namespace only.
			want := []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{corev1.LabelMetadataName: nsOperator}}}}
			if diff := cmp.Diff(want, rule.From); diff != "" {
				t.Errorf("NetworkPolicy health-port rule does not admit exactly the operator's namespace (-want +got):\n%s", diff)
			}
			operatorAdmitted = true
			continue
		}
		if diff := cmp.Diff(wantPeers, rule.From); diff != "" {
			t.Errorf("NetworkPolicy peers differ from spec.allowedClients (-want +got):\n%s", diff)
		}
		if !maps.Equal(ports, forwarded) {
			t.Errorf("NetworkPolicy ports %v, want the forwarded container ports %v", sortedPorts(ports), sortedPorts(forwarded))
		}
		found = true
	}
	if !operatorAdmitted {
		t.Errorf("NetworkPolicy has no rule admitting the operator to the health port %d: %+v", tunnelHealthPort, np.Spec.Ingress)
	}
	if !found {
		t.Errorf("NetworkPolicy has no ingress rule with the allowed clients: %+v", np.Spec.Ingress)
	}
	if !ownedBy(&np, &pf) {
		t.Errorf("NetworkPolicy is not controlled by the PortForward")
	}

	// Removing allowedClients falls back to the chart's default (tunnel.defaultClients: namespace): the
	// forwarded ports admit every pod of the PortForward's namespace, and only those.
	if err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &pf); err != nil {
		t.Fatal(err)
	}
	patch = client.MergeFrom(pf.DeepCopy())
	pf.Spec.AllowedClients = nil
	if err := s.k.c.Patch(ctx, &pf, patch); err != nil {
		t.Fatalf("clear allowedClients: %v", err)
	}
	waitFor(ctx, t, time.Minute, "the NetworkPolicy to admit the namespace's pods", func(ctx context.Context) (bool, string, error) {
		var got networkingv1.NetworkPolicy
		if err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &got); err != nil {
			return false, "", err
		}
		r := got.Spec.Ingress[0]
		sameNamespace := len(r.From) == 1 && r.From[0].NamespaceSelector == nil && r.From[0].PodSelector != nil &&
			len(r.From[0].PodSelector.MatchLabels) == 0 && len(r.From[0].PodSelector.MatchExpressions) == 0
		return sameNamespace, fmt.Sprintf("clients rule %+v", r), nil
	})
}

func sortedPorts(m map[int32]bool) []int32 {
	out := make([]int32, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// operatorRBAC checks that the operator runs as the chart's ServiceAccount, bound only by the chart, and
// that this identity cannot read Secrets.
func (s *suite) operatorRBAC(ctx context.Context, t testing.TB) {
	var deps appsv1.DeploymentList
	if err := s.k.c.List(ctx, &deps, client.InNamespace(nsOperator)); err != nil {
		t.Fatal(err)
	}
	if len(deps.Items) != 1 || deps.Items[0].Spec.Template.Spec.ServiceAccountName != operatorSA {
		t.Fatalf("want one operator Deployment running as %s in %s, got %d", operatorSA, nsOperator, len(deps.Items))
	}
	isOperator := func(subjects []rbacv1.Subject) bool {
		for _, sub := range subjects {
			if sub.Kind == rbacv1.ServiceAccountKind && sub.Name == operatorSA && sub.Namespace == nsOperator {
				return true
			}
		}
		return false
	}
	fromChart := func(o metav1.Object) bool {
		return o.GetAnnotations()["meta.helm.sh/release-name"] == release &&
			o.GetAnnotations()["meta.helm.sh/release-namespace"] == nsOperator
	}
	var crbs rbacv1.ClusterRoleBindingList
	if err := s.k.c.List(ctx, &crbs); err != nil {
		t.Fatal(err)
	}
	var bound []string
	for _, b := range crbs.Items {
		if isOperator(b.Subjects) {
			bound = append(bound, "ClusterRole/"+b.RoleRef.Name)
			if !fromChart(&b) {
				t.Errorf("ClusterRoleBinding %s binds the operator but is not the chart's", b.Name)
			}
		}
	}
	var rbs rbacv1.RoleBindingList
	if err := s.k.c.List(ctx, &rbs); err != nil {
		t.Fatal(err)
	}
	for _, b := range rbs.Items {
		if isOperator(b.Subjects) {
			bound = append(bound, b.Namespace+"/"+b.RoleRef.Kind+"/"+b.RoleRef.Name)
			if !fromChart(&b) {
				t.Errorf("RoleBinding %s/%s binds the operator but is not the chart's", b.Namespace, b.Name)
			}
		}
	}
	sort.Strings(bound)
	t.Logf("operator ServiceAccount is bound to: %v", bound)

	as := fmt.Sprintf("system:serviceaccount:%s:%s", nsOperator, operatorSA)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "secrets", "--all-namespaces"}, "no"},
		{[]string{"list", "secrets", "--all-namespaces"}, "no"},
		{[]string{"watch", "secrets", "--all-namespaces"}, "no"},
		{[]string{"get", "secrets", "-n", nsApps}, "no"},
		{[]string{"get", "secrets", "-n", nsOperator}, "no"},
		{[]string{"create", "pods", "-n", nsApps}, "no"},
		{[]string{"delete", "namespaces"}, "no"},
		{[]string{"create", "clusterrolebindings"}, "no"},
		// What it must be able to do (proves the impersonation is evaluated against real bindings).
		{[]string{"create", "deployments.apps", "-n", nsApps}, "yes"},
		{[]string{"list", "portforwards.ssmtunnel.io", "--all-namespaces"}, "yes"},
		{[]string{"patch", "portforwards.ssmtunnel.io", "--subresource=status", "-n", nsApps}, "yes"},
		{[]string{"update", "portforwards.ssmtunnel.io", "--subresource=status", "-n", nsApps}, "no"}, // status is patched
		{[]string{"update", "portforwards.ssmtunnel.io", "--subresource=finalizers", "-n", nsApps}, "yes"},
		{[]string{"update", "portforwards.ssmtunnel.io", "-n", nsApps}, "no"}, // the spec is the user's
		// It may change its own admission policies, not the chart's guard of its Deployments.
		{[]string{"patch", "validatingadmissionpolicies/portforwardpolicies.ssmtunnel.io"}, "yes"},
		{[]string{"patch", "validatingadmissionpolicies/tunnel-deployments.ssmtunnel.io"}, "yes"},
		{[]string{"patch", "validatingadmissionpolicies/" + release + "-operator-deployments"}, "no"},
		{[]string{"patch", "validatingadmissionpolicybindings/" + release + "-operator-deployments"}, "no"},
		{[]string{"delete", "validatingadmissionpolicies/" + release + "-operator-deployments"}, "no"},
	} {
		got := canI(ctx, t, s.e.kubectl(), s.e.kubeconfig, as, c.args...)
		t.Logf("kubectl auth can-i %s --as %s: %s", strings.Join(c.args, " "), as, got)
		if got != c.want {
			t.Errorf("kubectl auth can-i %s as the operator: %q, want %q", strings.Join(c.args, " "), got, c.want)
		}
	}

	s.operatorDeploymentsFenced(ctx, t, as)
}

// deletion deletes the PortForward: garbage collection removes every child.
func (s *suite) deletion(ctx context.Context, t testing.TB) {
	pf := &v1alpha1.PortForward{ObjectMeta: metav1.ObjectMeta{Namespace: nsApps, Name: pfName}}
	start := time.Now()
	if err := s.k.c.Delete(ctx, pf); err != nil {
		t.Fatalf("delete PortForward: %v", err)
	}
	sel := client.MatchingLabels{"app.kubernetes.io/instance": pfName, "app.kubernetes.io/managed-by": "ssmtunnel-operator"}
	waitFor(ctx, t, 3*time.Minute, "every child of the PortForward to be gone", func(ctx context.Context) (bool, string, error) {
		left := map[string]int{}
		lists := map[string]client.ObjectList{
			"Deployment":          &appsv1.DeploymentList{},
			"ReplicaSet":          &appsv1.ReplicaSetList{},
			"Pod":                 &corev1.PodList{},
			"Service":             &corev1.ServiceList{},
			"PodDisruptionBudget": &policyv1.PodDisruptionBudgetList{},
			"NetworkPolicy":       &networkingv1.NetworkPolicyList{},
		}
		for kind, l := range lists {
			if err := s.k.c.List(ctx, l, client.InNamespace(nsApps), sel); err != nil {
				return false, "", err
			}
			if n := meta.LenList(l); n > 0 {
				left[kind] = n
			}
		}
		err := s.k.c.Get(ctx, client.ObjectKeyFromObject(pf), &v1alpha1.PortForward{})
		if err == nil {
			left["PortForward"] = 1
		} else if !apierrors.IsNotFound(err) {
			return false, "", err
		}
		// The Service is named like the PortForward, whatever its labels.
		if err := s.k.c.Get(ctx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &corev1.Service{}); err == nil {
			left["Service "+pfName]++
		}
		return len(left) == 0, fmt.Sprintf("left: %v", left), nil
	})
	s.tm.add(t, "PortForward delete -> all children gone", time.Since(start))
}

func mergeLabels(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}
