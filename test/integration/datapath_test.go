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

// The operator's status from the tunnel pods' own reports. envtest runs no kubelet, so each "tunnel pod" is
// a real portforward.Forwarder against the emulator, serving its real /readyz on loopback, and a Pod object
// whose IP and health port point at it: the operator reads it over HTTP exactly as over the pod network.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
	"github.com/ssmtunnel/ssmtunnel/internal/testutil"
	"github.com/ssmtunnel/ssmtunnel/internal/testutil/emutest"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

const (
	onlineInstance  = "i-0123456789abcdef0"
	offlineInstance = "i-0fedcba9876543210"
	deniedKey       = "AKIDDENIED"
)

// runTunnel runs a Forwarder as a tunnel pod would (--retry-start, a probe every second) and serves its
// /readyz on loopback; it returns the health port.
func runTunnel(t *testing.T, emu *emulator.Emulator, accessKey, target string, remotePort int) int32 {
	t.Helper()
	api := ssm.New(ssm.Options{Region: "eu-west-1", BaseEndpoint: aws.String(emu.Endpoint()),
		Credentials: credentials.NewStaticCredentialsProvider(accessKey, "secret", "")})
	client, err := session.NewClient(session.ClientConfig{API: api})
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := portforward.New(portforward.Config{Target: target, Ports: []portforward.PortPair{{Remote: remotePort}},
		RetryStart: true, ProbeInterval: time.Second}, client)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fwd.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/readyz", fwd.ReadyzHandler())
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return int32(testutil.Port(l))
}

// tunnelPod creates the Pod object of PortForward name, Running at 127.0.0.1 with the given health port.
func tunnelPod(t *testing.T, ns, name string, healthPort int32, ready bool) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-0", Namespace: ns, Labels: map[string]string{
			"app.kubernetes.io/name": "ssmtunnel", "app.kubernetes.io/instance": name,
			"app.kubernetes.io/component": "tunnel", "app.kubernetes.io/managed-by": "ssmtunnel-operator"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "tunnel", Image: "x",
			Ports: []corev1.ContainerPort{{Name: "health", ContainerPort: healthPort}}}}},
	}
	if err := k8sClient.Create(ctx, pod); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "tunnel", Image: "x", ImageID: "x", Ready: ready,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}
	if err := k8sClient.Status().Update(ctx, pod); err != nil {
		t.Fatalf("pod status: %v", err)
	}
}

// waitCondition waits until condition typ of the PortForward has status/reason, and returns it.
func waitCondition(t *testing.T, ns, name, typ, want string, timeout time.Duration) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	eventually(t, timeout, fmt.Sprintf("%s %s", typ, want), func() error {
		pf := getPF(t, ns, name)
		c := meta.FindStatusCondition(pf.Status.Conditions, typ)
		if c == nil {
			return fmt.Errorf("no %s condition: %+v", typ, pf.Status.Conditions)
		}
		got = *c
		if s := string(c.Status) + "/" + c.Reason; s != want {
			return fmt.Errorf("%s is %s (%s)", typ, s, c.Message)
		}
		return nil
	})
	return got
}

func TestStatusReasonsFromTunnelPods(t *testing.T) {
	emu := emutest.Start(t, emulator.Config{
		Instances: []emulator.Instance{{ID: onlineInstance}, {ID: offlineInstance, PingStatus: emulator.PingConnectionLost}},
		Faults:    emulator.Faults{DeniedAccessKeys: []string{deniedKey}},
	})
	opts := testOptions()
	opts.StatusInterval = time.Second
	ns := newNamespace(t)
	startManager(t, ns, opts, nil)

	t.Run("offline instance", func(t *testing.T) {
		port := runTunnel(t, emu, "AKIDTEST", offlineInstance, 5432)
		createPF(t, ns, "offline", offlineInstance, nil)
		setDeploymentStatus(t, ns, "offline", 1, 1, 0)
		tunnelPod(t, ns, "offline", port, false)
		c := waitCondition(t, ns, "offline", v1alpha1.ConditionReady, "False/TargetNotConnected", 60*time.Second)
		t.Logf("Ready: %s", c.Message)
		waitCondition(t, ns, "offline", v1alpha1.ConditionDegraded, "True/TargetNotConnected", 10*time.Second)
		if pf := getPF(t, ns, "offline"); pf.Status.State != v1alpha1.ReasonTargetNotConnected {
			t.Errorf("status.state %q, want TargetNotConnected", pf.Status.State)
		}
		eventually(t, 10*time.Second, "TargetNotConnected event", func() error { return warningEvent(ns, "offline", "TargetNotConnected") })
	})

	t.Run("denied credentials", func(t *testing.T) {
		port := runTunnel(t, emu, deniedKey, onlineInstance, 5432)
		createPF(t, ns, "denied", onlineInstance, nil)
		setDeploymentStatus(t, ns, "denied", 1, 1, 0)
		tunnelPod(t, ns, "denied", port, false)
		c := waitCondition(t, ns, "denied", v1alpha1.ConditionReady, "False/AccessDenied", 60*time.Second)
		t.Logf("Ready: %s", c.Message)
	})

	t.Run("nothing listening, then listening", func(t *testing.T) {
		// A port nothing listens on: bind one and close it.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		remote := testutil.Port(l)
		l.Close()
		port := runTunnel(t, emu, "AKIDTEST", onlineInstance, remote)
		createPF(t, ns, "closed", onlineInstance, func(pf *v1alpha1.PortForward) {
			pf.Spec.Ports[0].RemotePort = int32(remote)
			pf.Spec.DestinationProbe = &v1alpha1.DestinationProbe{PeriodSeconds: 5}
		})
		setDeploymentStatus(t, ns, "closed", 1, 1, 1)
		tunnelPod(t, ns, "closed", port, true)
		c := waitCondition(t, ns, "closed", v1alpha1.ConditionDestinationReachable, "False/DestinationUnreachable", 60*time.Second)
		t.Logf("DestinationReachable: %s", c.Message)
		pf := getPF(t, ns, "closed")
		if pf.Status.State != v1alpha1.ReasonDestinationUnreachable || pf.Status.Message != c.Message {
			t.Errorf("state %q message %q, want DestinationUnreachable and the condition's message", pf.Status.State, pf.Status.Message)
		}
		if r := meta.FindStatusCondition(pf.Status.Conditions, v1alpha1.ConditionReady); r == nil || r.Status != metav1.ConditionTrue {
			t.Errorf("Ready %+v: an unreachable destination must not change Ready", r)
		}

		// The destination starts listening: the next probe reaches it.
		back, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(remote))
		if err != nil {
			t.Fatalf("listen again on %d: %v", remote, err)
		}
		go func() {
			for {
				c, err := back.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		t.Cleanup(func() { back.Close() })
		waitCondition(t, ns, "closed", v1alpha1.ConditionDestinationReachable, "True/DestinationReachable", 60*time.Second)
		if pf := getPF(t, ns, "closed"); pf.Status.State != v1alpha1.ReasonAvailable {
			t.Errorf("state %q after the destination came back, want Available", pf.Status.State)
		}
	})
}

func createPF(t *testing.T, ns, name, instance string, mutate func(*v1alpha1.PortForward)) {
	t.Helper()
	pf := newPF(ns, name, func(pf *v1alpha1.PortForward) {
		pf.Spec.Target.InstanceID = instance
		pf.Spec.Replicas = ptr.To[int32](1)
		if mutate != nil {
			mutate(pf)
		}
	})
	if err := k8sClient.Create(ctx, pf); err != nil {
		t.Fatalf("create PortForward %s: %v", name, err)
	}
	eventually(t, 20*time.Second, "Deployment of "+name, func() error {
		return k8sClient.Get(ctx, key(ns, name), &appsv1.Deployment{})
	})
}
