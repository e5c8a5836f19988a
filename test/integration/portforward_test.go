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
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

var ctx = context.Background()

func key(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

func getPF(t testing.TB, ns, name string) *v1alpha1.PortForward {
	t.Helper()
	pf := &v1alpha1.PortForward{}
	if err := k8sClient.Get(ctx, key(ns, name), pf); err != nil {
		t.Fatalf("get PortForward: %v", err)
	}
	return pf
}

// updatePF applies mutate to the latest PortForward, retrying on conflicts.
func updatePF(t testing.TB, ns, name string, mutate func(pf *v1alpha1.PortForward)) {
	t.Helper()
	eventually(t, 10*time.Second, "update PortForward", func() error {
		pf := getPF(t, ns, name)
		mutate(pf)
		return k8sClient.Update(ctx, pf)
	})
}

func deploymentArgs(d *appsv1.Deployment) []string { return d.Spec.Template.Spec.Containers[0].Args }

func condition(pf *v1alpha1.PortForward, typ string) string {
	c := meta.FindStatusCondition(pf.Status.Conditions, typ)
	if c == nil {
		return "<none>"
	}
	return fmt.Sprintf("%s/%s", c.Status, c.Reason)
}

func isControlledBy(obj client.Object, pf *v1alpha1.PortForward) error {
	if !metav1.IsControlledBy(obj, pf) {
		return fmt.Errorf("%T %s is not controlled by the PortForward: %v", obj, obj.GetName(), obj.GetOwnerReferences())
	}
	if obj.GetLabels()["app.kubernetes.io/managed-by"] != "ssmtunnel-operator" || obj.GetLabels()["app.kubernetes.io/instance"] != pf.Name {
		return fmt.Errorf("%T %s labels %v", obj, obj.GetName(), obj.GetLabels())
	}
	return nil
}

// TestCreateBuildsChildren: a new PortForward gets its Deployment, Service, PodDisruptionBudget and default
// ServiceAccount with the right spec, and a status naming its Service and addresses.
func TestCreateBuildsChildren(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, ns, testOptions(), nil)
	pf := newPF(ns, "db", func(pf *v1alpha1.PortForward) {
		pf.Spec.Ports = append(pf.Spec.Ports, v1alpha1.PortSpec{Name: "http", Port: 80, RemotePort: 8080})
	})
	if err := k8sClient.Create(ctx, pf); err != nil {
		t.Fatalf("create: %v", err)
	}
	if pf.Spec.Replicas == nil || *pf.Spec.Replicas != 2 || *pf.Spec.SessionsPerReplica != 1 ||
		pf.Spec.Ports[0].Protocol != v1alpha1.ProtocolTCP || pf.Spec.Service.Type != v1alpha1.ServiceTypeClusterIP {
		t.Errorf("API defaults not applied: %+v", pf.Spec)
	}

	d := &appsv1.Deployment{}
	eventually(t, 20*time.Second, "Deployment exists", func() error { return k8sClient.Get(ctx, key(ns, "db"), d) })
	if err := isControlledBy(d, pf); err != nil {
		t.Error(err)
	}
	if got := ptr.Deref(d.Spec.Replicas, -1); got != 2 {
		t.Errorf("Deployment replicas = %d, want 2", got)
	}
	if s := d.Spec.Strategy; s.RollingUpdate == nil || s.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update = %+v, want maxUnavailable 0", s.RollingUpdate)
	}
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	wantArgs := []string{"forward", "i-0123456789abcdef0", "10000:5432", "10001:8080", "--address", "0.0.0.0", "--region", "eu-west-1"}
	if !slices.Equal(c.Args[:len(wantArgs)], wantArgs) || c.Command[0] != "/ssmtunnel" || c.Image != "localhost/ssmtunnel:test" {
		t.Errorf("command %v args %v image %s", c.Command, c.Args, c.Image)
	}
	if sc := c.SecurityContext; sc == nil || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || pod.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
		!ptr.Deref(pod.SecurityContext.RunAsNonRoot, false) {
		t.Errorf("not restricted: pod %+v container %+v", pod.SecurityContext, sc)
	}
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("probes %+v %+v", c.ReadinessProbe, c.LivenessProbe)
	}
	if ptr.Deref(pod.TerminationGracePeriodSeconds, 0) < 20 || pod.ServiceAccountName != "ssmtunnel-tunnel" {
		t.Errorf("grace %v, service account %q", pod.TerminationGracePeriodSeconds, pod.ServiceAccountName)
	}
	if d.Spec.Template.Annotations["ssmtunnel.io/pod-spec-hash"] == "" {
		t.Error("pod template has no hash annotation")
	}
	if pod.Affinity == nil || pod.Affinity.PodAntiAffinity == nil {
		t.Error("no anti-affinity")
	}

	svc := &corev1.Service{}
	eventually(t, 10*time.Second, "Service exists", func() error { return k8sClient.Get(ctx, key(ns, "db"), svc) })
	if err := isControlledBy(svc, pf); err != nil {
		t.Error(err)
	}
	if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[0].Port != 5432 || svc.Spec.Ports[0].TargetPort != intstr.FromString("postgres") ||
		svc.Spec.Ports[1].Port != 80 || svc.Spec.Ports[1].TargetPort != intstr.FromString("http") || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Errorf("Service spec %+v", svc.Spec)
	}
	pdb := &policyv1.PodDisruptionBudget{}
	eventually(t, 10*time.Second, "PDB exists", func() error { return k8sClient.Get(ctx, key(ns, "db"), pdb) })
	if err := isControlledBy(pdb, pf); err != nil {
		t.Error(err)
	}
	if pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("PDB minAvailable %v", pdb.Spec.MinAvailable)
	}
	sa := &corev1.ServiceAccount{}
	if err := k8sClient.Get(ctx, key(ns, "ssmtunnel-tunnel"), sa); err != nil {
		t.Errorf("default tunnel ServiceAccount: %v", err)
	}
	if err := k8sClient.Get(ctx, key(ns, "db"), &networkingv1.NetworkPolicy{}); !apierrors.IsNotFound(err) {
		t.Errorf("NetworkPolicy without allowedClients: err = %v, want NotFound", err)
	}

	eventually(t, 10*time.Second, "status written", func() error {
		pf = getPF(t, ns, "db")
		st := pf.Status
		if st.ObservedGeneration != pf.Generation || st.ServiceName != "db" || st.ResolvedTarget != "i-0123456789abcdef0" ||
			!slices.Equal(st.Addresses, []string{"db." + ns + ".svc:5432", "db." + ns + ".svc:80"}) || st.Ready != "0/2" {
			return fmt.Errorf("status %+v", st)
		}
		if got := condition(pf, v1alpha1.ConditionReady); got != "False/Unavailable" {
			return fmt.Errorf("Ready %s", got)
		}
		return nil
	})
}

// TestUpdateRollsChildren: changes of ports, replicas, remoteHost, allowedClients and service type reach
// the children; unwanted children are removed.
func TestUpdateRollsChildren(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, ns, testOptions(), nil)
	pf := newPF(ns, "web", func(pf *v1alpha1.PortForward) {
		pf.Spec.AllowedClients = []v1alpha1.ClientPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}}}
	})
	if err := k8sClient.Create(ctx, pf); err != nil {
		t.Fatalf("create: %v", err)
	}
	d := &appsv1.Deployment{}
	eventually(t, 20*time.Second, "Deployment exists", func() error { return k8sClient.Get(ctx, key(ns, "web"), d) })
	np := &networkingv1.NetworkPolicy{}
	eventually(t, 10*time.Second, "NetworkPolicy exists", func() error { return k8sClient.Get(ctx, key(ns, "web"), np) })
	// The clients' rule, the metrics port, and the health port for the operator's reads of /readyz.
	if len(np.Spec.Ingress) != 3 || len(np.Spec.Ingress[0].From) != 1 || np.Spec.Ingress[0].From[0].PodSelector.MatchLabels["app"] != "api" ||
		np.Spec.Ingress[2].Ports[0].Port.IntValue() != 8081 {
		t.Errorf("NetworkPolicy ingress %+v", np.Spec.Ingress)
	}
	hash := d.Spec.Template.Annotations["ssmtunnel.io/pod-spec-hash"]

	updatePF(t, ns, "web", func(pf *v1alpha1.PortForward) {
		pf.Spec.Ports = append(pf.Spec.Ports, v1alpha1.PortSpec{Name: "http", Port: 80, RemotePort: 8080})
		pf.Spec.Replicas = ptr.To[int32](1)
		pf.Spec.RemoteHost = "db.internal.example"
		pf.Spec.AllowedClients = nil
	})
	eventually(t, 20*time.Second, "Deployment updated and pods rolled", func() error {
		if err := k8sClient.Get(ctx, key(ns, "web"), d); err != nil {
			return err
		}
		args := strings.Join(deploymentArgs(d), " ")
		if ptr.Deref(d.Spec.Replicas, 0) != 1 || !strings.Contains(args, "10001:8080") || !strings.Contains(args, "--remote-host db.internal.example") {
			return fmt.Errorf("replicas %v args %s", d.Spec.Replicas, args)
		}
		if d.Spec.Template.Annotations["ssmtunnel.io/pod-spec-hash"] == hash {
			return errors.New("pod template hash unchanged")
		}
		return nil
	})
	eventually(t, 10*time.Second, "Service has both ports", func() error {
		svc := &corev1.Service{}
		if err := k8sClient.Get(ctx, key(ns, "web"), svc); err != nil {
			return err
		}
		if len(svc.Spec.Ports) != 2 {
			return fmt.Errorf("ports %+v", svc.Spec.Ports)
		}
		return nil
	})
	eventually(t, 10*time.Second, "PDB removed at 1 replica", func() error {
		if err := k8sClient.Get(ctx, key(ns, "web"), &policyv1.PodDisruptionBudget{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("get PDB: %v", err)
		}
		return nil
	})
	eventually(t, 10*time.Second, "NetworkPolicy removed", func() error {
		if err := k8sClient.Get(ctx, key(ns, "web"), &networkingv1.NetworkPolicy{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("get NetworkPolicy: %v", err)
		}
		return nil
	})

	// ClusterIP -> Headless needs a new Service (clusterIP is immutable).
	updatePF(t, ns, "web", func(pf *v1alpha1.PortForward) { pf.Spec.Service.Type = v1alpha1.ServiceTypeHeadless })
	eventually(t, 20*time.Second, "Service replaced by a headless one", func() error {
		svc := &corev1.Service{}
		if err := k8sClient.Get(ctx, key(ns, "web"), svc); err != nil {
			return err
		}
		if svc.Spec.ClusterIP != corev1.ClusterIPNone {
			return fmt.Errorf("clusterIP %q", svc.Spec.ClusterIP)
		}
		return nil
	})
	// Back to 2 replicas: the PDB returns.
	updatePF(t, ns, "web", func(pf *v1alpha1.PortForward) { pf.Spec.Replicas = ptr.To[int32](2) })
	eventually(t, 10*time.Second, "PDB back", func() error {
		return k8sClient.Get(ctx, key(ns, "web"), &policyv1.PodDisruptionBudget{})
	})
}

// setDeploymentStatus plays the Deployment controller that envtest does not run.
func setDeploymentStatus(t testing.TB, ns, name string, replicas, updated, ready int32) {
	t.Helper()
	eventually(t, 10*time.Second, "set Deployment status", func() error {
		d := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, key(ns, name), d); err != nil {
			return err
		}
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: replicas, UpdatedReplicas: updated,
			ReadyReplicas: ready, AvailableReplicas: ready}
		return k8sClient.Status().Update(ctx, d)
	})
}

func waitConditions(t testing.TB, ns, name, ready, progressing, degraded, readyText string) {
	t.Helper()
	eventually(t, 15*time.Second, fmt.Sprintf("conditions %s %s %s", ready, progressing, degraded), func() error {
		pf := getPF(t, ns, name)
		got := []string{condition(pf, v1alpha1.ConditionReady), condition(pf, v1alpha1.ConditionProgressing), condition(pf, v1alpha1.ConditionDegraded), pf.Status.Ready}
		if want := []string{ready, progressing, degraded, readyText}; !slices.Equal(got, want) {
			return fmt.Errorf("got %v, want %v", got, want)
		}
		return nil
	})
}

// warningEvent finds a Warning event with reason on the PortForward.
func warningEvent(ns, name, reason string) error {
	list := &eventsv1.EventList{}
	if err := k8sClient.List(ctx, list, client.InNamespace(ns)); err != nil {
		return err
	}
	var seen []string
	for _, e := range list.Items {
		if e.Regarding.Kind == "PortForward" && e.Regarding.Name == name && e.Type == corev1.EventTypeWarning && e.Reason == reason {
			return nil
		}
		seen = append(seen, e.Type+"/"+e.Reason)
	}
	return fmt.Errorf("no Warning %s event for %s; events: %v", reason, name, seen)
}

// TestStatusFollowsDeployment: conditions move with the Deployment's status and the pods' state.
func TestStatusFollowsDeployment(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, ns, testOptions(), nil)
	if err := k8sClient.Create(ctx, newPF(ns, "st", nil)); err != nil {
		t.Fatalf("create: %v", err)
	}
	eventually(t, 20*time.Second, "Deployment exists", func() error { return k8sClient.Get(ctx, key(ns, "st"), &appsv1.Deployment{}) })
	waitConditions(t, ns, "st", "False/Unavailable", "True/RollingOut", "False/AsExpected", "0/2")

	setDeploymentStatus(t, ns, "st", 2, 1, 1)
	waitConditions(t, ns, "st", "True/PartiallyAvailable", "True/RollingOut", "False/AsExpected", "1/2")

	setDeploymentStatus(t, ns, "st", 2, 2, 2)
	waitConditions(t, ns, "st", "True/Available", "False/RolledOut", "False/AsExpected", "2/2")

	setDeploymentStatus(t, ns, "st", 2, 2, 1)
	waitConditions(t, ns, "st", "True/PartiallyAvailable", "False/RolledOut", "True/PartiallyAvailable", "1/2")

	// A crash-looping tunnel pod: Degraded/CrashLooping and a Warning event.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "st-abc", Namespace: ns, Labels: map[string]string{
			"app.kubernetes.io/name": "ssmtunnel", "app.kubernetes.io/instance": "st",
			"app.kubernetes.io/component": "tunnel", "app.kubernetes.io/managed-by": "ssmtunnel-operator"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "tunnel", Image: "x"}}},
	}
	if err := k8sClient.Create(ctx, pod); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "tunnel", Image: "x", ImageID: "x",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off"}}}}
	if err := k8sClient.Status().Update(ctx, pod); err != nil {
		t.Fatalf("pod status: %v", err)
	}
	waitConditions(t, ns, "st", "True/PartiallyAvailable", "False/RolledOut", "True/CrashLooping", "1/2")
	eventually(t, 10*time.Second, "CrashLooping event", func() error { return warningEvent(ns, "st", "CrashLooping") })

	// Scaled to zero.
	if err := k8sClient.Delete(ctx, pod); err != nil {
		t.Fatalf("delete pod: %v", err)
	}
	updatePF(t, ns, "st", func(pf *v1alpha1.PortForward) { pf.Spec.Replicas = ptr.To[int32](0) })
	eventually(t, 10*time.Second, "Deployment at 0", func() error {
		d := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, key(ns, "st"), d); err != nil {
			return err
		}
		if ptr.Deref(d.Spec.Replicas, -1) != 0 {
			return fmt.Errorf("replicas %v", d.Spec.Replicas)
		}
		return nil
	})
	setDeploymentStatus(t, ns, "st", 0, 0, 0)
	waitConditions(t, ns, "st", "False/ScaledToZero", "False/RolledOut", "False/AsExpected", "0/0")
	if pf := getPF(t, ns, "st"); pf.Status.ObservedGeneration != pf.Generation {
		t.Errorf("observedGeneration %d, generation %d", pf.Status.ObservedGeneration, pf.Generation)
	}
}

// TestScaleSubresource: kubectl scale works through the scale subresource.
func TestScaleSubresource(t *testing.T) {
	ns := newNamespace(t)
	pf := newPF(ns, "sc", nil)
	if err := k8sClient.Create(ctx, pf); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := k8sClient.SubResource("scale").Update(ctx, pf, client.WithSubResourceBody(&autoscalingv1.Scale{
		TypeMeta:   metav1.TypeMeta{APIVersion: "autoscaling/v1", Kind: "Scale"},
		ObjectMeta: metav1.ObjectMeta{Name: "sc", Namespace: ns},
		Spec:       autoscalingv1.ScaleSpec{Replicas: 4},
	})); err != nil {
		t.Fatalf("scale: %v", err)
	}
	if got := ptr.Deref(getPF(t, ns, "sc").Spec.Replicas, -1); got != 4 {
		t.Errorf("replicas after scale = %d, want 4", got)
	}
}
