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
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
	"github.com/ssmtunnel/ssmtunnel/controllers"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
)

const (
	instA = "i-0000000000000000a"
	instB = "i-0000000000000000b"
	instW = "i-0000000000000000c"
)

// waitTarget waits until both the Deployment's tunnel command and status.resolvedTarget use want.
func waitTarget(t testing.TB, ns, name, want string) {
	t.Helper()
	eventually(t, 20*time.Second, "target "+want, func() error {
		d := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, key(ns, name), d); err != nil {
			return err
		}
		if got := deploymentArgs(d)[1]; got != want {
			return fmt.Errorf("Deployment targets %s", got)
		}
		if got := getPF(t, ns, name).Status.ResolvedTarget; got != want {
			return fmt.Errorf("status.resolvedTarget %s", got)
		}
		return nil
	})
}

// TestSelectorResolutionAndFailover resolves a tag selector through the emulator's
// DescribeInstanceInformation (real aws-sdk-go-v2 client over HTTP), and fails over when the instance in
// use goes offline.
func TestSelectorResolutionAndFailover(t *testing.T) {
	e, err := emulator.Start(emulator.Config{Instances: []emulator.Instance{
		{ID: instA, Tags: map[string]string{"role": "db", "env": "prod"}},
		{ID: instB, Tags: map[string]string{"role": "db", "env": "prod"}},
		{ID: instW, Tags: map[string]string{"role": "web", "env": "prod"}},
	}})
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })

	ns := newNamespace(t)
	startManager(t, ns, testOptions(), controllers.SSMInstanceLister{Client: ssmClientFor(e.Endpoint())})
	pf := newPF(ns, "sel", func(pf *v1alpha1.PortForward) {
		pf.Spec.Target = v1alpha1.Target{Selector: &v1alpha1.InstanceSelector{Tags: map[string]string{"role": "db", "env": "prod"}}}
	})
	if err := k8sClient.Create(ctx, pf); err != nil {
		t.Fatalf("create: %v", err)
	}
	waitTarget(t, ns, "sel", instA) // first Online match in ID order

	if err := e.SetPingStatus(instA, "ConnectionLost"); err != nil {
		t.Fatal(err)
	}
	waitTarget(t, ns, "sel", instB) // failover, found by the periodic re-resolve

	if err := e.SetPingStatus(instA, "Online"); err != nil {
		t.Fatal(err)
	}
	if err := e.SetPingStatus(instB, "ConnectionLost"); err != nil {
		t.Fatal(err)
	}
	waitTarget(t, ns, "sel", instA)

	// Nothing online: the Deployment keeps its last target, the status says why, a Warning event tells the user.
	if err := e.SetPingStatus(instA, "ConnectionLost"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "Degraded NoOnlineInstance", func() error {
		if got := condition(getPF(t, ns, "sel"), v1alpha1.ConditionDegraded); got != "True/NoOnlineInstance" {
			return fmt.Errorf("Degraded %s", got)
		}
		return nil
	})
	eventually(t, 10*time.Second, "NoOnlineInstance event", func() error { return warningEvent(ns, "sel", "NoOnlineInstance") })
	waitTarget(t, ns, "sel", instA)
}

// TestSelectorWithoutMatch: a selector that never matched creates the Service but no Deployment, and says so.
func TestSelectorWithoutMatch(t *testing.T) {
	e, err := emulator.Start(emulator.Config{Instances: []emulator.Instance{{ID: instW, Tags: map[string]string{"role": "web"}}}})
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	ns := newNamespace(t)
	startManager(t, ns, testOptions(), controllers.SSMInstanceLister{Client: ssmClientFor(e.Endpoint())})
	pf := newPF(ns, "none", func(pf *v1alpha1.PortForward) {
		pf.Spec.Target = v1alpha1.Target{Selector: &v1alpha1.InstanceSelector{Tags: map[string]string{"role": "db"}}}
	})
	if err := k8sClient.Create(ctx, pf); err != nil {
		t.Fatalf("create: %v", err)
	}
	eventually(t, 20*time.Second, "Ready False NoOnlineInstance", func() error {
		if got := condition(getPF(t, ns, "none"), v1alpha1.ConditionReady); got != "False/NoOnlineInstance" {
			return fmt.Errorf("Ready %s", got)
		}
		return nil
	})
	if err := k8sClient.Get(ctx, key(ns, "none"), &corev1.Service{}); err != nil {
		t.Errorf("Service: %v", err)
	}
	if err := k8sClient.Get(ctx, key(ns, "none"), &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("Deployment without a target: err = %v, want NotFound", err)
	}
	eventually(t, 10*time.Second, "NoOnlineInstance event", func() error { return warningEvent(ns, "none", "NoOnlineInstance") })

	// An instance with the tags comes online: the tunnel is created without any change to the PortForward.
	if err := e.AddInstance(emulator.Instance{ID: instA, Tags: map[string]string{"role": "db"}}); err != nil {
		t.Fatal(err)
	}
	waitTarget(t, ns, "none", instA)
}
