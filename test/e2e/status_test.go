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
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

const (
	// offlineInstanceID is an emulated instance whose agent is not connected.
	offlineInstanceID = "i-0e2e0000000000002"
	// nsDenied holds PortForwards whose tunnel pods sign with a key the emulator denies.
	nsDenied  = "ssmtunnel-e2e-denied"
	deniedKey = "AKIAE2EDENIEDKEY0000"
	// closedPort is a port nothing listens on in the emulated instance.
	closedPort = 9
)

// brokenPortForwards creates three PortForwards that cannot work and checks that each says why, from what
// its tunnel pods see, within 60 s of its pod running, and that none of their pods crash: an offline
// instance (TargetNotConnected), credentials the service denies (AccessDenied), and a destination port
// nothing listens on (DestinationReachable=False, STATUS DestinationUnreachable). The last one restricts
// its clients, so a NetworkPolicy is in place while the operator reads its pods' /readyz. (The bridge CNI
// here does not enforce NetworkPolicies; the rule admitting the operator is checked in the unit tests.)
func (s *suite) brokenPortForwards(ctx context.Context, t testing.TB) {
	// The emulator answers calls signed with deniedKey with AccessDeniedException, for this step only (the
	// admin endpoint replaces every fault at once).
	s.emulatorAdmin(ctx, t, http.MethodPut, "/emulator/faults", fmt.Sprintf(`{"deniedAccessKeys":[%q]}`, deniedKey), nil)
	defer s.emulatorAdmin(context.Background(), t, http.MethodPut, "/emulator/faults", `{}`, nil)
	ensureNamespace(ctx, t, s.k, nsDenied, mergeLabels(restricted, map[string]string{"ssmtunnel.io/e2e": "denied"}))
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: credentialsSecret, Namespace: nsDenied},
		StringData: map[string]string{"AWS_ACCESS_KEY_ID": deniedKey, "AWS_SECRET_ACCESS_KEY": "e2e-fake-secret-denied"},
	}
	if err := s.k.c.Create(ctx, secret); err != nil {
		t.Fatalf("create the denied credentials Secret: %v", err)
	}
	pf := func(ns, name, instance string, remotePort int32, mutate func(*v1alpha1.PortForward)) *v1alpha1.PortForward {
		p := &v1alpha1.PortForward{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.PortForwardSpec{
				Target:   v1alpha1.Target{InstanceID: instance},
				Ports:    []v1alpha1.PortSpec{{Name: "app", Port: 80, RemotePort: remotePort}},
				Replicas: ptr.To[int32](1),
			},
		}
		if mutate != nil {
			mutate(p)
		}
		if err := s.k.c.Create(ctx, p); err != nil {
			t.Fatalf("create PortForward %s/%s: %v", ns, name, err)
		}
		return p
	}
	broken := []struct {
		pf        *v1alpha1.PortForward
		condition string
		want      string // status/reason
		state     string
	}{
		{pf(nsApps, "offline", offlineInstanceID, webPort, nil),
			v1alpha1.ConditionReady, "False/" + v1alpha1.ReasonTargetNotConnected, v1alpha1.ReasonTargetNotConnected},
		{pf(nsDenied, "denied", instanceID, webPort, nil),
			v1alpha1.ConditionReady, "False/" + v1alpha1.ReasonAccessDenied, v1alpha1.ReasonAccessDenied},
		{pf(nsApps, "closed", instanceID, closedPort, func(p *v1alpha1.PortForward) {
			p.Spec.DestinationProbe = &v1alpha1.DestinationProbe{PeriodSeconds: 5}
			p.Spec.AllowedClients = []v1alpha1.ClientPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: clientLabels}}}
		}), v1alpha1.ConditionDestinationReachable, "False/" + v1alpha1.ReasonDestinationUnreachable, v1alpha1.ReasonDestinationUnreachable},
	}
	for _, b := range broken {
		name := b.pf.Namespace + "/" + b.pf.Name
		var started, reported time.Time
		waitFor(ctx, t, 3*time.Minute, fmt.Sprintf("PortForward %s: %s %s", name, b.condition, b.want), func(ctx context.Context) (bool, string, error) {
			var pods corev1.PodList
			if err := s.k.c.List(ctx, &pods, client.InNamespace(b.pf.Namespace), client.MatchingLabels(tunnelLabels(b.pf.Name))); err != nil {
				return false, "", err
			}
			for _, p := range pods.Items {
				for _, cs := range p.Status.ContainerStatuses {
					if cs.RestartCount > 0 || cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff" {
						return false, "", fmt.Errorf("tunnel pod %s restarted (%d restarts): it must wait, not crash", p.Name, cs.RestartCount)
					}
					if r := cs.State.Running; r != nil && (started.IsZero() || r.StartedAt.Time.Before(started)) {
						started = r.StartedAt.Time
					}
				}
			}
			var got v1alpha1.PortForward
			if err := s.k.c.Get(ctx, client.ObjectKeyFromObject(b.pf), &got); err != nil {
				return false, "", err
			}
			c := meta.FindStatusCondition(got.Status.Conditions, b.condition)
			if c == nil || string(c.Status)+"/"+c.Reason != b.want {
				return false, conditionSummary(got.Status.Conditions), nil
			}
			if got.Status.State != b.state {
				return false, fmt.Sprintf("status.state %q", got.Status.State), nil
			}
			reported = time.Now() // a condition's lastTransitionTime moves only with its status, not its reason
			return !started.IsZero(), "", nil
		})
		// The kubelet's clock is this machine's: the cluster runs here.
		after := reported.Sub(started)
		t.Logf("%s: %s %s %s after its tunnel container started", name, b.condition, b.want, after.Round(time.Second))
		if after > time.Minute {
			t.Errorf("%s: %s %s came %s after the tunnel container started, want at most 60 s", name, b.condition, b.want, after.Round(time.Second))
		}
		s.tm.add(t, fmt.Sprintf("tunnel started -> %s %s (%s)", b.condition, b.want, b.pf.Name), max(after, 0))
	}
	// The destination refuses, but the tunnel is up: Ready keeps its meaning.
	var closed v1alpha1.PortForward
	if err := s.k.c.Get(ctx, client.ObjectKeyFromObject(broken[2].pf), &closed); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(closed.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("PortForward closed: Ready %+v, want True (sessions up; the destination refuses)", c)
	}
	out, err := run(ctx, s.e.kubectl(), "--kubeconfig", s.e.kubeconfig, "get", "portforwards", "-A", "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl get pf -A -o wide:\n%s", out)
	fmt.Printf("kubectl get pf -A -o wide:\n%s", out)
	for _, b := range broken {
		if err := s.k.c.Delete(ctx, b.pf); err != nil {
			t.Errorf("delete %s: %v", b.pf.Name, err)
		}
	}
}
