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
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
	"github.com/ssmtunnel/ssmtunnel/controllers"
)

// writeLog records every request of a client that can change an object, other than server-side apply.
type writeLog struct {
	mu     sync.Mutex
	writes []string
	// applies counts server-side apply requests, which are no-ops when nothing changed.
	applies int
}

func (w *writeLog) add(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, s)
}

// countingClient wraps a direct (uncached) client, recording writes; failApply makes the apply of that kind
// fail, like an operator killed half-way through a reconcile.
func countingClient(t testing.TB, log *writeLog, failApply string) client.Client {
	t.Helper()
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return interceptor.NewClient(c, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			log.add(fmt.Sprintf("create %T %s", obj, obj.GetName()))
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			log.add(fmt.Sprintf("update %T %s", obj, obj.GetName()))
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
			log.add(fmt.Sprintf("patch %T %s", obj, obj.GetName()))
			return c.Patch(ctx, obj, p, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			log.add(fmt.Sprintf("delete %T %s", obj, obj.GetName()))
			return c.Delete(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			log.add(fmt.Sprintf("patch %s %T %s", sub, obj, obj.GetName()))
			return c.SubResource(sub).Patch(ctx, obj, p, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			log.add(fmt.Sprintf("update %s %T %s", sub, obj, obj.GetName()))
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			log.mu.Lock()
			log.applies++
			log.mu.Unlock()
			if failApply != "" && fmt.Sprintf("%T", obj) == failApply {
				return errors.New("injected failure: operator stopped half-way")
			}
			return c.Apply(ctx, obj, opts...)
		},
	})
}

// snapshot is the resourceVersion of the PortForward and each child: equal snapshots mean nothing was written.
func snapshot(t testing.TB, ns, name string) map[string]string {
	t.Helper()
	objs := map[string]client.Object{
		"PortForward": &v1alpha1.PortForward{}, "Deployment": &appsv1.Deployment{}, "Service": &corev1.Service{},
		"PodDisruptionBudget": &policyv1.PodDisruptionBudget{}, "NetworkPolicy": &networkingv1.NetworkPolicy{},
	}
	out := map[string]string{}
	for kind, obj := range objs {
		if err := k8sClient.Get(ctx, key(ns, name), obj); err != nil {
			t.Fatalf("get %s: %v", kind, err)
		}
		out[kind] = obj.GetResourceVersion()
	}
	sa := &corev1.ServiceAccount{}
	if err := k8sClient.Get(ctx, key(ns, controllers.DefaultTunnelServiceAccountName), sa); err != nil {
		t.Fatalf("get ServiceAccount: %v", err)
	}
	out["ServiceAccount"] = sa.ResourceVersion
	return out
}

// reconcileTotal sums controller_runtime_reconcile_total of the portforward controller in this process.
func reconcileTotal(t testing.TB) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "portforward" {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// TestRestartConvergesAndIsIdempotent: an operator stopped half-way through a reconcile is restarted and
// converges; another restart and a further reconcile write nothing.
func TestRestartConvergesAndIsIdempotent(t *testing.T) {
	ns := newNamespace(t)
	pf := newPF(ns, "rs", func(pf *v1alpha1.PortForward) {
		pf.Spec.AllowedClients = []v1alpha1.ClientPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}}
	})
	if err := k8sClient.Create(ctx, pf); err != nil {
		t.Fatalf("create: %v", err)
	}
	req := reconcile.Request{NamespacedName: key(ns, "rs")}

	// 1. The operator dies after writing the Deployment, before the Service.
	var crashed writeLog
	half := &controllers.PortForwardReconciler{Client: countingClient(t, &crashed, "*v1.ServiceApplyConfiguration"),
		Recorder: events.NewFakeRecorder(100), Options: testOptions()}
	if _, err := half.Reconcile(ctx, req); err == nil {
		t.Fatal("half-way reconcile succeeded, want the injected failure")
	}
	if err := k8sClient.Get(ctx, key(ns, "rs"), &appsv1.Deployment{}); err != nil {
		t.Fatalf("Deployment after the half-way reconcile: %v", err)
	}

	// 2. A new operator converges: every child, and a status.
	stop := startManager(t, ns, testOptions(), nil)
	eventually(t, 20*time.Second, "converged", func() error {
		for _, obj := range []client.Object{&corev1.Service{}, &policyv1.PodDisruptionBudget{}, &networkingv1.NetworkPolicy{}} {
			if err := k8sClient.Get(ctx, key(ns, "rs"), obj); err != nil {
				return err
			}
		}
		if p := getPF(t, ns, "rs"); p.Status.ObservedGeneration != p.Generation || p.Status.ServiceName != "rs" {
			return fmt.Errorf("status %+v", p.Status)
		}
		return nil
	})
	stop()
	before := snapshot(t, ns, "rs")
	deployBefore := &appsv1.Deployment{}
	if err := k8sClient.Get(ctx, key(ns, "rs"), deployBefore); err != nil {
		t.Fatal(err)
	}

	// 3. Restart again: the fresh manager reconciles everything from its new cache, and changes nothing.
	total := reconcileTotal(t)
	startManager(t, ns, testOptions(), nil)
	eventually(t, 20*time.Second, "restarted manager reconciled", func() error {
		if got := reconcileTotal(t); got <= total {
			return fmt.Errorf("reconcile total %v, was %v", got, total)
		}
		return nil
	})
	// 4. A further reconcile, counted: server-side applies only, no other write, no new resourceVersion.
	var second writeLog
	again := &controllers.PortForwardReconciler{Client: countingClient(t, &second, ""),
		Recorder: events.NewFakeRecorder(100), Options: testOptions()}
	if _, err := again.Reconcile(ctx, req); err != nil {
		t.Fatalf("second reconcile: %v", err)
	}
	if len(second.writes) != 0 {
		t.Errorf("second reconcile wrote: %v", second.writes)
	}
	if second.applies == 0 {
		t.Error("second reconcile applied nothing: the test did not exercise the children")
	}
	if diff := cmp.Diff(before, snapshot(t, ns, "rs")); diff != "" {
		t.Errorf("resourceVersions changed after restart and a further reconcile (-before +after):\n%s", diff)
	}
	deployAfter := &appsv1.Deployment{}
	if err := k8sClient.Get(ctx, key(ns, "rs"), deployAfter); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(deployBefore.Spec, deployAfter.Spec); diff != "" {
		t.Errorf("Deployment spec changed (-before +after):\n%s", diff)
	}
}
