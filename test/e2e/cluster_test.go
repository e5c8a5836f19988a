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
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

// pollInterval is how often waits look at the cluster; short, because the waits measure recovery times.
const pollInterval = 200 * time.Millisecond

// env is what the suite needs from the Makefile (make test-e2e sets every variable).
type env struct {
	kubeconfig   string
	img          string // operator/tunnel/emulator image in the registry, e.g. 127.0.0.1:5000/ssmtunnel:v0.1.0
	imgDigest    string // its image index digest, as `make push` printed it
	registry     string // the local cluster's registry, e.g. 127.0.0.1:5000
	chartVersion string // the chart version `make chart-push` pushed
	helm         string
	kubeBin      string // folder with kubectl
	root         string // repository root
}

func loadEnv(t testing.TB) env {
	t.Helper()
	e := env{
		kubeconfig:   os.Getenv("KUBECONFIG"),
		img:          os.Getenv("IMG"),
		registry:     os.Getenv("REGISTRY"),
		chartVersion: os.Getenv("CHART_VERSION"),
		helm:         os.Getenv("HELM"),
		kubeBin:      os.Getenv("KUBE_BIN"),
		root:         repoRoot(t),
	}
	var missing []string
	for name, v := range map[string]string{"KUBECONFIG": e.kubeconfig, "IMG": e.img, "REGISTRY": e.registry,
		"CHART_VERSION": e.chartVersion, "HELM": e.helm, "KUBE_BIN": e.kubeBin} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Fatalf("%v not set: run the suite with `make test-e2e`, which brings the cluster and its registry up, pushes the image and the chart, and sets them", missing)
	}
	if !strings.HasPrefix(e.img, e.registry+"/") || strings.HasSuffix(e.img, ":latest") {
		t.Fatalf("IMG=%q must be in REGISTRY=%s with a version tag other than latest", e.img, e.registry)
	}
	digest, err := os.ReadFile(filepath.Join(e.root, "bin", "image.digest"))
	if err != nil {
		t.Fatalf("the pushed image's digest: %v (make push writes it)", err)
	}
	e.imgDigest = strings.TrimSpace(string(digest))
	return e
}

// chartRef is the chart in the registry, as a user installs it.
func (e env) chartRef() string { return "oci://" + e.registry + "/charts/ssmtunnel" }

// repoImage splits IMG into repository and tag.
func (e env) repoImage() (repo, tag string) {
	i := strings.LastIndex(e.img, ":")
	return e.img[:i], e.img[i+1:]
}

// webImage is the test web application's image, tagged like the product's.
func (e env) webImage() string {
	repo, tag := e.repoImage()
	return repo + "-e2e-web:" + tag
}

func (e env) kubectl() string { return filepath.Join(e.kubeBin, "kubectl") }

// clients bundles the typed controller-runtime client and a clientset (for logs).
type clients struct {
	cfg *rest.Config
	c   client.Client
	cs  *kubernetes.Clientset
}

func newClients(t testing.TB, kubeconfig string) clients {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v (is the cluster up? make cluster-up)", kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return clients{cfg: cfg, c: c, cs: cs}
}

// waitFor polls cond until it reports done, an error that is not transient, or timeout, and returns how long
// it took. The last observation is reported on timeout, so a failure says what the cluster looked like.
func waitFor(ctx context.Context, t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) (done bool, state string, err error)) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	err := wait.PollUntilContextTimeout(ctx, pollInterval, timeout, true, func(ctx context.Context) (bool, error) {
		done, state, err := cond(ctx)
		last = state
		if err != nil {
			last = fmt.Sprintf("%s (error: %v)", state, err)
		}
		return done, nil
	})
	if err != nil {
		t.Fatalf("timed out after %s waiting for %s; last seen: %s", timeout, what, last)
	}
	return time.Since(start)
}

// run executes a command, streaming nothing, and returns its combined output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// runStdout executes a command and returns its standard output alone (warnings on stderr would corrupt a
// manifest); a failure carries both.
func runStdout(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// restrictedPod returns the security settings that Pod Security "restricted" requires.
func restrictedPodSecurity() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		RunAsUser:      ptr.To[int64](65532),
		RunAsGroup:     ptr.To[int64](65532),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func restrictedContainerSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		RunAsNonRoot:             ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// runClientPod runs the web application's client in a pod of namespace ns until it exits, and returns its
// output and whether it succeeded. The pod is deleted afterwards.
func runClientPod(ctx context.Context, t testing.TB, k clients, image, ns, name string, labels map[string]string, timeout time.Duration, args ...string) (string, bool) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			SecurityContext:               restrictedPodSecurity(),
			Containers: []corev1.Container{{
				Name:            "client",
				Image:           image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         append([]string{"/webapp"}, args...),
				SecurityContext: restrictedContainerSecurity(),
			}},
		},
	}
	if err := k.c.Create(ctx, pod); err != nil {
		t.Fatalf("create client pod %s/%s: %v", ns, name, err)
	}
	defer func() {
		_ = k.c.Delete(context.Background(), pod, client.GracePeriodSeconds(0))
	}()
	var phase corev1.PodPhase
	waitFor(ctx, t, timeout, fmt.Sprintf("client pod %s/%s to finish", ns, name), func(ctx context.Context) (bool, string, error) {
		var p corev1.Pod
		if err := k.c.Get(ctx, client.ObjectKeyFromObject(pod), &p); err != nil {
			return false, "", err
		}
		phase = p.Status.Phase
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed, podSummary(&p), nil
	})
	logs := podLogs(ctx, k, ns, name, "client", false)
	return logs, phase == corev1.PodSucceeded
}

// startClientPod starts a long-running client pod and returns a function that waits for it to exit and
// returns its output.
func startClientPod(ctx context.Context, t testing.TB, k clients, image, ns, name string, labels map[string]string, args ...string) (wait func(timeout time.Duration) (string, bool)) {
	t.Helper()
	done := make(chan struct{})
	var out string
	var ok bool
	go func() {
		defer close(done)
		out, ok = runClientPodNoFatal(ctx, k, image, ns, name, labels, args...)
	}()
	return func(timeout time.Duration) (string, bool) {
		select {
		case <-done:
			return out, ok
		case <-time.After(timeout):
			t.Fatalf("client pod %s/%s did not finish within %s", ns, name, timeout)
			return "", false
		}
	}
}

// runClientPodNoFatal is runClientPod for use off the test goroutine (t.Fatal must not be called there).
func runClientPodNoFatal(ctx context.Context, k clients, image, ns, name string, labels map[string]string, args ...string) (string, bool) {
	rt := &recordingTB{}
	out, ok := func() (out string, ok bool) {
		defer func() {
			if r := recover(); r != nil {
				out, ok = fmt.Sprint(r), false
			}
		}()
		return runClientPod(ctx, rt, k, image, ns, name, labels, 5*time.Minute, args...)
	}()
	if rt.failed != "" {
		return rt.failed, false
	}
	return out, ok
}

// recordingTB turns Fatalf into a panic carrying the message, so helpers can run on other goroutines.
type recordingTB struct {
	testing.TB
	failed string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	panic(r.failed)
}
func (r *recordingTB) Logf(string, ...any) {}

// podLogs returns a container's logs (or a note why there are none).
func podLogs(ctx context.Context, k clients, ns, pod, container string, previous bool) string {
	req := k.cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container, Previous: previous, TailLines: ptr.To[int64](200)})
	rc, err := req.Stream(ctx)
	if err != nil {
		return fmt.Sprintf("(no logs: %v)", err)
	}
	defer func() { _ = rc.Close() }()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// podSummary is one line about a pod: phase, readiness, and why containers wait or terminated.
func podSummary(p *corev1.Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s phase=%s", p.Name, p.Status.Phase)
	if p.DeletionTimestamp != nil {
		b.WriteString(" terminating")
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady || c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
			fmt.Fprintf(&b, " %s=%s", c.Type, c.Status)
			if c.Message != "" {
				fmt.Fprintf(&b, "(%s)", c.Message)
			}
		}
	}
	for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		fmt.Fprintf(&b, " [%s ready=%t restarts=%d", cs.Name, cs.Ready, cs.RestartCount)
		if w := cs.State.Waiting; w != nil {
			fmt.Fprintf(&b, " waiting=%s:%s", w.Reason, w.Message)
		}
		if x := cs.State.Terminated; x != nil {
			fmt.Fprintf(&b, " terminated=%s exit=%d", x.Reason, x.ExitCode)
		}
		b.WriteString("]")
	}
	return b.String()
}

// dumpDiagnostics logs what helps to understand a failure: pods, events, PortForwards and the logs of every
// container in the given namespaces.
func dumpDiagnostics(t testing.TB, k clients, namespaces ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, ns := range namespaces {
		t.Logf("===== diagnostics of namespace %s =====", ns)
		var pfs v1alpha1.PortForwardList
		if err := k.c.List(ctx, &pfs, client.InNamespace(ns)); err == nil {
			for _, pf := range pfs.Items {
				t.Logf("PortForward %s: generation=%d status=%+v", pf.Name, pf.Generation, pf.Status)
			}
		}
		var pods corev1.PodList
		if err := k.c.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			t.Logf("list pods: %v", err)
			continue
		}
		for i := range pods.Items {
			t.Logf("pod %s", podSummary(&pods.Items[i]))
		}
		var events corev1.EventList
		if err := k.c.List(ctx, &events, client.InNamespace(ns)); err == nil {
			sort.Slice(events.Items, func(i, j int) bool {
				return eventTime(&events.Items[i]).Before(eventTime(&events.Items[j]))
			})
			for _, e := range events.Items {
				t.Logf("event %s %s %s/%s %s: %s", eventTime(&e).Format(time.TimeOnly), e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
			}
		}
		for _, p := range pods.Items {
			for _, c := range p.Spec.Containers {
				t.Logf("----- logs %s/%s [%s] -----\n%s", ns, p.Name, c.Name, podLogs(ctx, k, ns, p.Name, c.Name, false))
				for _, cs := range p.Status.ContainerStatuses {
					if cs.Name == c.Name && cs.RestartCount > 0 {
						t.Logf("----- previous logs %s/%s [%s] -----\n%s", ns, p.Name, c.Name, podLogs(ctx, k, ns, p.Name, c.Name, true))
					}
				}
			}
		}
	}
}

func eventTime(e *corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	default:
		return e.CreationTimestamp.Time
	}
}

// ensureNamespace creates ns with labels after deleting a leftover of an earlier run, and waits for its
// default ServiceAccount (pods created before it exists are rejected).
func ensureNamespace(ctx context.Context, t testing.TB, k clients, name string, labels map[string]string) {
	t.Helper()
	deleteNamespace(ctx, t, k, name)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := k.c.Create(ctx, ns); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	waitFor(ctx, t, time.Minute, "the default ServiceAccount of "+name, func(ctx context.Context) (bool, string, error) {
		err := k.c.Get(ctx, client.ObjectKey{Namespace: name, Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, "", client.IgnoreNotFound(err)
	})
}

// deleteNamespace deletes ns and waits until it is gone.
func deleteNamespace(ctx context.Context, t testing.TB, k clients, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k.c.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete namespace %s: %v", name, err)
	}
	waitFor(ctx, t, 3*time.Minute, "namespace "+name+" to be deleted", func(ctx context.Context) (bool, string, error) {
		err := k.c.Get(ctx, client.ObjectKey{Name: name}, ns)
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		return false, fmt.Sprintf("phase %s", ns.Status.Phase), err
	})
}

// buildAndPush builds a one-platform image with hack/imagebuild and pushes it to the cluster's registry,
// as `make push` does for the product's.
func buildAndPush(ctx context.Context, t testing.TB, e env, tag string, args ...string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "image")
	build := append([]string{"run", "./hack/imagebuild", "--tag", tag, "--layout", dir, "--platform", "linux/amd64"}, args...)
	if out, err := execIn(ctx, e.root, nil, append([]string{"go"}, build...)...).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", tag, err, out)
	}
	push := []string{"go", "run", "./hack/imagebuild", "push", "--layout", dir, "--to", tag, "--plain-http"}
	if out, err := execIn(ctx, e.root, nil, push...).CombinedOutput(); err != nil {
		t.Fatalf("push %s: %v\n%s", tag, err, out)
	}
}

// execIn prepares a command run in dir with extra environment variables.
func execIn(ctx context.Context, dir string, extraEnv []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), extraEnv...)
	return cmd
}
